#!/usr/bin/env bash
# Session-secret routes of the agent (loopback only, temp home, a fake
# credential): GET /v1/credentials/aws/NAME p50/p99 at 64 concurrent
# clients (target p99 <= 1 ms) and `agent credentials aws` per call, the
# credential_process helper (target <= 10 ms). Uses the release agent in
# $RH_BIN_DIR (default target/release; scripts/bench.sh builds it) and the
# driver agent/examples/credentials_bench.rs. Figures only, never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir="${RH_BIN_DIR:-$PWD/target/release}"
[ -x "$bin_dir/agent" ] || cargo build --release --quiet -p agent
cargo build --release --quiet -p agent --example credentials_bench
target/release/examples/credentials_bench "$bin_dir/agent"
