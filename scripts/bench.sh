#!/usr/bin/env bash
# Benchmarks (never asserted in tests): builds the release binaries, then runs
# every section in scripts/bench.d/ in name order, or only those whose file
# name contains one of the arguments:
#   scripts/bench.sh            # all sections
#   scripts/bench.sh detect     # only 10-detect.sh
# Each section prints its figures next to the target and the reference's figure.
# Sections that need Docker or OpenBao say so and skip when those are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "cargo build --release"
cargo build --release --quiet -p controller -p agent
export RH_BIN_DIR="$PWD/target/release"
export PATH="$RH_BIN_DIR:$PATH"

status=0
for section in scripts/bench.d/*.sh; do
  [ -e "$section" ] || continue
  if [ "$#" -gt 0 ]; then
    match=0
    for want in "$@"; do case "$section" in *"$want"*) match=1 ;; esac; done
    [ "$match" = 1 ] || continue
  fi
  step "bench: $(basename "$section")"
  bash "$section" || { echo "bench section $section failed" >&2; status=1; }
done
exit "$status"
