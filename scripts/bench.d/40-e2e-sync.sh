#!/usr/bin/env bash
# Benchmark: wall time of `controller sync` of the 16 fixture secrets (all
# builtin providers) to 1, 8 and 32 nodes of a docker-compose cluster whose
# agents were started by the boot script, over real SSH from this host.
# Targets: 150 ms for 1 node, 1.5 s for 32, t(32)/t(1) <= 4.
# Reports the first (cold, everything written) sync to 32 nodes, then the
# median of RH_BENCH_RUNS (default 10) steady syncs per cluster size. Runs
# only when a Docker engine answers; always tears the cluster down.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
require_docker 40-e2e-sync
export RH_E2E_SUFFIX=-bench
. e2e/env.sh
RUNS=${RH_BENCH_RUNS:-10}
# Short path: the controller keeps ssh control sockets under its HOME.
OUT=$(mktemp -d /tmp/rhe2e-bench.XXXXXX)
trap 'close_ssh_masters "$OUT"; e2e/cluster.sh down || true; rm -rf "$OUT"' EXIT
trap 'exit 130' INT TERM

step "40-e2e-sync: build (release), images, 32-node cluster"
bench_cluster_up --agents 32 --bare 0 --systemd 0
read -r -a HOSTS <<<"$RH_E2E_AGENT_HOSTS"

e2e/fixtures.sh "$OUT/fixtures" >/dev/null
CONTROLLER=$PWD/target/release/controller
# shellcheck disable=SC2046  # fixture.env: one VAR=value word per line
ctl() {
  env -i PATH="$PATH" HOME="$OUT/fixtures/home" USER=bench LANG=C.UTF-8 \
    RH_SSH_CONFIG="$RH_E2E_SSH_CONFIG" $(cat "$OUT/fixtures/fixture.env") \
    "$CONTROLLER" "$@"
}
for n in 1 8 32; do
  args=()
  for h in "${HOSTS[@]:0:$n}"; do args+=(--host "$h"); done
  ctl cluster add "bench$n" --user ubuntu --identity-file "$RH_E2E_SSH_KEY" "${args[@]}" >/dev/null
done

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
sync_ms() {
  local t0 t1
  t0=$(now_ms)
  ctl sync --cluster "$1" >"$OUT/last-sync.out" 2>&1 \
    || { echo "40-e2e-sync: controller sync --cluster $1 failed:" >&2; tail -n 20 "$OUT/last-sync.out" >&2; exit 1; }
  t1=$(now_ms)
  echo $((t1 - t0))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }

cold=$(sync_ms bench32)
echo "e2e sync, 16 secrets, 32 nodes, first (cold) sync: ${cold} ms"
declare -A MED
for n in 1 8 32; do
  sync_ms "bench$n" >/dev/null  # warm-up
  for _ in $(seq 1 "$RUNS"); do sync_ms "bench$n"; done >"$OUT/sync-$n.ms"
  MED[$n]=$(median <"$OUT/sync-$n.ms")
  printf 'e2e sync, 16 secrets, %2d node(s): median %5d ms  (min %d, max %d, %d runs)\n' \
    "$n" "${MED[$n]}" "$(sort -n "$OUT/sync-$n.ms" | head -n1)" "$(sort -n "$OUT/sync-$n.ms" | tail -n1)" "$RUNS"
done
# The floor under those figures: a bare `ssh HOST true` (new connection, key
# exchange, auth) to 1 node, and to all 32 at once, from this host.
ssh_floor() {
  local t0 t1
  t0=$(now_ms)
  printf '%s\n' "${HOSTS[@]:0:$1}" | xargs -P "$1" -I{} ssh -F "$RH_E2E_SSH_CONFIG" {} true
  t1=$(now_ms)
  echo $((t1 - t0))
}
for n in 1 32; do
  for _ in 1 2 3 4 5; do ssh_floor "$n"; done >"$OUT/ssh-$n.ms"
  # shellcheck disable=SC2016  # backticks are text here
  printf 'reference: bare `ssh true` to %2d node(s) in parallel: median %d ms\n' "$n" "$(median <"$OUT/ssh-$n.ms")"
done
verdict() { if [ "$1" = 1 ]; then echo "ok"; else echo "MISSED"; fi; }
ratio=$(awk -v a="${MED[32]}" -v b="${MED[1]}" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}')
echo "target 1 node <= 150 ms: $(verdict $(( MED[1] <= 150 )))"
echo "target 32 nodes <= 1500 ms: $(verdict $(( MED[32] <= 1500 )))"
echo "ratio t(32)/t(1) = $ratio, target <= 4: $(verdict "$(awk -v r="$ratio" 'BEGIN {print (r <= 4) ? 1 : 0}')")"
