#!/usr/bin/env bash
# HA test of the remote store: a three-node OpenBao Raft cluster in docker
# (retry_join; init + unseal with one key share), the real `controller` on the
# host given the three URLs. It pushes, kills the leader container, then
# checks that push, list and pull still work through the URL list.
# Self-contained: e2e/vault-ha/cluster.sh builds the image it needs from
# rh-e2e-base:bookworm plus the host's `bao` binary and starts the cluster;
# everything is torn down on exit.
# Prints "N passed, N failed"; exits 1 if anything failed.
# Env: RH_CONTROLLER  the controller binary (default: target/release/controller,
#                     built when missing)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROJECT=rhvaultha$$
pass=0 fail=0
log() { printf '[vault-ha] %s\n' "$*" >&2; }
ok() { pass=$((pass + 1)); printf 'ok   %s\n' "$*"; }
ko() { fail=$((fail + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check DESCRIPTION CMD...: run CMD, count it
  local what=$1; shift
  if "$@"; then ok "$what"; else ko "$what"; fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rh-vault-ha.XXXXXX")
# Only to look at and kill the containers cluster.sh started (same project).
compose() { BAO_IMAGE=x BAO_PORT1=1 BAO_PORT2=2 BAO_PORT3=3 docker-compose -p "$PROJECT" -f "$HERE/docker-compose.yml" "$@"; }
cleanup() {
  local rc=$?
  if [ "$fail" -gt 0 ] || [ "$rc" -ne 0 ]; then
    compose logs --no-color --tail=40 >&2 2>/dev/null || true
  fi
  "$HERE/cluster.sh" down --project "$PROJECT" || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cluster (e2e/vault-ha/cluster.sh) ----------------------------------------
controller_bin() {
  local bin=${RH_CONTROLLER:-$ROOT/target/release/controller}
  if [ ! -x "$bin" ]; then
    log "building the release controller"
    (cd "$ROOT" && cargo build --release -q -p controller)
    bin=$ROOT/target/release/controller
  fi
  echo "$bin"
}
CONTROLLER=$(controller_bin)
"$HERE/cluster.sh" up --project "$PROJECT" --env-file "$WORK/bao.env"
# shellcheck source=/dev/null  # written by cluster.sh up
. "$WORK/bao.env"
BAO=$BAO_BIN ROOT_TOKEN=$BAO_ROOT_TOKEN
read -r URL1 URL2 URL3 <<<"$BAO_URLS"
URLS=("$URL1" "$URL2" "$URL3")
export BAO_ADDR='' VAULT_ADDR='' VAULT_TOKEN=$ROOT_TOKEN BAO_TOKEN=$ROOT_TOKEN
hbao() { "$BAO" "$@"; }
health() { curl -s -o /dev/null -w '%{http_code}' "$1/v1/sys/health" 2>/dev/null || true; }

# --- the test --------------------------------------------------------------
HOME_A=$WORK/home-a HOME_B=$WORK/home-b
mkdir -p "$HOME_A" "$HOME_B"
ALL_OUT=$WORK/all-output.log LAST_OUT=$WORK/last-output.log
: >"$ALL_OUT"
ctl() { # ctl HOME ARGS...: the controller with that home; output kept for the leak check
  local home=$1 rc=0; shift
  env -u VAULT_ADDR -u BAO_ADDR HOME="$home" USER=hauser VAULT_TOKEN="$ROOT_TOKEN" \
    "$CONTROLLER" "$@" >"$LAST_OUT" 2>&1 || rc=$?
  cat "$LAST_OUT" >>"$ALL_OUT"
  [ "$rc" -eq 0 ] || { printf '  controller %s -> exit %d:\n' "$*" "$rc"; sed 's/^/    /' "$LAST_OUT"; }
  return "$rc"
}
save_secret() { # save_secret HOME NAME VALUE
  local json=$WORK/values.json
  printf '{"api_key": "%s"}' "$3" >"$json"
  ctl "$1" secret create "$2" --values-json "$json" --force >/dev/null || ko "secret create $2"
  rm -f "$json"
}
remote_value() { # remote_value NAME: the api_key stored remotely (read via any live node)
  local u
  for u in "${URLS[@]}"; do
    if hbao kv get -address="$u" -mount=secret -field=api_key "rh/hauser/$1" 2>/dev/null; then return 0; fi
  done
  return 1
}
leader_url() {
  local u
  for u in "${URLS[@]}"; do [ "$(health "$u")" = 200 ] && { echo "$u"; return; }; done
}
container_of() { case $1 in "$URL1") echo bao1 ;; "$URL2") echo bao2 ;; "$URL3") echo bao3 ;; esac; }

check "login with three URLs" ctl "$HOME_A" login --url "$URL1" --url "$URL2" --url "$URL3"
save_secret "$HOME_A" alpha ha-value-alpha-1
save_secret "$HOME_A" beta ha-value-beta-1
check "push before the failover" ctl "$HOME_A" vault push alpha beta
check "remote holds alpha" test "$(remote_value alpha)" = ha-value-alpha-1

LEADER=$(leader_url)
LEADER_C=$(container_of "$LEADER")
log "killing the leader $LEADER_C ($LEADER)"
compose kill "$LEADER_C" >/dev/null 2>&1
check "leader container is down" bash -c "! curl -s -m 2 $LEADER/v1/sys/health >/dev/null"

save_secret "$HOME_A" gamma ha-value-gamma-1
save_secret "$HOME_A" beta ha-value-beta-2
check "push after the leader was killed" ctl "$HOME_A" vault push beta gamma
check "remote holds the new beta" test "$(remote_value beta)" = ha-value-beta-2
check "remote holds gamma" test "$(remote_value gamma)" = ha-value-gamma-1
check "login --download on a second machine after the failover" \
  ctl "$HOME_B" login --url "$URL1" --url "$URL2" --url "$URL3" --download
check "pull after the failover" ctl "$HOME_B" vault pull alpha beta gamma --overwrite
for n in alpha beta gamma; do
  check "pulled $n is saved with mode 600" test "$(stat -c %a "$HOME_B/.rh/secrets/$n.json" 2>/dev/null)" = 600
done
check "pulled beta has the new value" grep -q ha-value-beta-2 "$HOME_B/.rh/secrets/beta.json"
check "list after the failover" ctl "$HOME_B" vault list
check "list shows gamma" grep -q gamma "$LAST_OUT"
check "no value or token in any controller output" bash -c "! grep -q -e ha-value -e '$ROOT_TOKEN' '$ALL_OUT'"

printf '%d passed, %d failed\n' "$pass" "$fail"
[ "$fail" -eq 0 ]
