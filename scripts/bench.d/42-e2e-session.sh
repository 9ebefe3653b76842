#!/usr/bin/env bash
# Benchmark (docker): mint + push of one AWS session secret to 32 nodes of a
# docker-compose cluster, warm SSH masters, STS answered by moto on this
# host's loopback (the nodes never talk to it). Reports, over RH_BENCH_RUNS
# (default 10) syncs, the median wall time of `controller sync --secret
# sess`, the median mint time the controller logs (`mint_ms`, -v), and
# their difference: the push after STS answered (target <= 150 ms).
# Runs only when a Docker engine answers; always tears the cluster down.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
require_docker 42-e2e-session
ensure_test_tools  # moto[server] among the Python peers
export RH_E2E_SUFFIX=-bench
. e2e/env.sh
RUNS=${RH_BENCH_RUNS:-10}
OUT=$(mktemp -d /tmp/rhe2e-sess.XXXXXX)
MOTO_PID=
cleanup() {
  close_ssh_masters "$OUT"
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; fi
  e2e/cluster.sh down || true
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "42-e2e-session: build (release), images, 32-node cluster"
bench_cluster_up --agents 32 --bare 0 --systemd 0
read -r -a HOSTS <<<"$RH_E2E_AGENT_HOSTS"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

mkdir -p "$OUT/home/.aws"
printf '[default]\naws_access_key_id = AKIABENCHLONGLIVED\naws_secret_access_key = bench-long-lived\nregion = us-east-1\n' \
  >"$OUT/home/.aws/credentials"
CONTROLLER=$PWD/target/release/controller
ctl() {
  env -i PATH="$PATH" HOME="$OUT/home" USER=bench LANG=C.UTF-8 \
    RH_SSH_CONFIG="$RH_E2E_SSH_CONFIG" AWS_ENDPOINT_URL_STS="http://127.0.0.1:$PORT" \
    AWS_EC2_METADATA_DISABLED=true "$CONTROLLER" "$@"
}
args=()
for h in "${HOSTS[@]:0:32}"; do args+=(--host "$h"); done
ctl cluster add sess32 --user ubuntu --identity-file "$RH_E2E_SSH_KEY" "${args[@]}" >/dev/null
ctl secret create sess --provider aws --session --role-arn arn:aws:iam::123456789012:role/bench --duration 15m >/dev/null
ctl sync --cluster sess32 --secret sess >/dev/null  # cold: masters up

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
walls=() mints=() pushes=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ms)
  ctl -v sync --cluster sess32 --secret sess >"$OUT/out" 2>"$OUT/err" \
    || { echo "42-e2e-session: sync failed" >&2; tail -n 20 "$OUT/err" >&2; exit 1; }
  t1=$(now_ms)
  mint=$(sed -n 's/.*mint_ms=\([0-9]*\).*/\1/p' "$OUT/err" | head -n1)
  walls+=($((t1 - t0))) mints+=("${mint:-0}") pushes+=($((t1 - t0 - ${mint:-0})))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "mint + push of one session secret to 32 nodes, warm ($RUNS runs): wall $(median "${walls[@]}") ms, mint (STS) $(median "${mints[@]}") ms, push after STS answered $(median "${pushes[@]}") ms  [target <= 150 ms]"
