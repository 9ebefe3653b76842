#!/usr/bin/env bash
# Agent benchmark (loopback only, temp home, a few seconds): start to healthy
# /healthz, idle RSS of the agent plus its base_env host, /v1/sync of 16
# secrets (p50/p90), requests/s with 64 concurrent clients, and /v1/sync of
# 1,000, 2,000 and 8,000 secrets in as many directories. Uses the
# release agent in $RH_BIN_DIR (default target/release; scripts/bench.sh
# builds it) and builds the small driver `agent/examples/agent_bench.rs`,
# then the same figures for the static x86_64 musl agent that nodes run
# (target/agents, built by scripts/build-agents.sh when missing; RH_BENCH_MUSL=0
# skips it). Figures only, never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir="${RH_BIN_DIR:-$PWD/target/release}"
[ -x "$bin_dir/agent" ] || cargo build --release --quiet -p agent
cargo build --release --quiet -p agent --example agent_bench
echo "== host build (glibc): $bin_dir/agent, $(du -h "$bin_dir/agent" | cut -f1)"
target/release/examples/agent_bench "$bin_dir/agent"
if [ "${RH_BENCH_MUSL:-1}" != 0 ] && [ "$(uname -m)" = x86_64 ]; then
  musl=target/agents/x86_64-unknown-linux-musl/agent
  [ -x "$musl" ] || scripts/build-agents.sh --target x86_64-unknown-linux-musl
  echo "== static agent (musl): $musl, $(du -h "$musl" | cut -f1)"
  target/release/examples/agent_bench "$PWD/$musl"
fi
