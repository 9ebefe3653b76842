#!/usr/bin/env bash
# Runs every check and test: format, shellcheck on every script, clippy
# (warnings are errors), rustdoc (warnings are errors), the controller for
# macOS (`cargo-zigbuild check` for both Apple targets: zig brings the
# macOS libc headers, no Apple SDK needed), the whole cargo test
# suite (unit, router, integration over real SSH and a real OpenBao dev
# server), the Python package (its wheel built, installed in a fresh venv,
# its pytest suite run there), then the docker-compose e2e suite when a
# Docker engine answers.
# Installs what the tests need when it is missing (sshd, OpenBao, shellcheck,
# zig and cargo-zigbuild, the rustup targets, maturin).
# E2E=require (set by .ci/run) makes a missing Docker engine a failure
# instead of a skip; E2E=skip skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_test_tools

step "cargo fmt --check"
cargo fmt --all -- --check

step "shellcheck (every shell script in the repository)"
mapfile -t scripts < <(git ls-files '*.sh' .ci/run 2>/dev/null || find scripts e2e -name '*.sh')
shellcheck -x "${scripts[@]}"

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo deny check bans licenses sources"
ensure_cargo_deny
cargo deny --log-level error check bans licenses sources
# Advisories need RustSec's database, cloned from GitHub. Where GitHub cannot
# be reached (this project's CI reaches package registries only) a copy
# already on the machine is used, and the step names its last commit date;
# with none, the check is skipped and says so: an unreachable database is not
# a passed check.
cargo deny --log-level error fetch db >/dev/null 2>&1 || true
db=
for d in "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/*/; do
  if [ -d "$d.git" ]; then db=${d%/}; break; fi
done
if [ -n "$db" ]; then
  step "cargo deny check advisories (RustSec database of $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo 'unknown date'))"
  cargo deny --log-level error --offline check advisories
else
  step "cargo deny check advisories: SKIPPED (the RustSec advisory database cannot be fetched from here and no copy is on this machine)"
fi

step "cargo doc --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "controller for macOS: cargo-zigbuild check (${APPLE_TARGETS[*]})"
ensure_zigbuild "${APPLE_TARGETS[@]}"
for t in "${APPLE_TARGETS[@]}"; do
  cargo-zigbuild check --quiet -p controller --target "$t"
done

step "cargo test"
cargo test --workspace --quiet 2>&1 | tee "${TMPDIR:-/tmp}/rh-cargo-test.log"
[ "${PIPESTATUS[0]}" -eq 0 ]
# No test leaves an agent running in its temp home (a guard dropped after
# the temp dir it reads the agent's pid from lets the agent outlive it).
left_agents() { pgrep -f "$PWD/target/debug/agent serve .*--home ${TMPDIR:-/tmp}/" || true; }
if [ -n "$(left_agents)" ]; then sleep 5; fi
left=$(left_agents)
if [ -n "$left" ]; then
  echo "error: agents the tests left running:" >&2
  # shellcheck disable=SC2086  # one pid per word
  ps -o pid=,args= -p $left >&2
  # shellcheck disable=SC2086
  kill $left
  exit 1
fi

step "Python package: wheel (maturin, dev profile: the binary cargo test built), fresh venv, pytest"
ensure_maturin
py_tmp=$(mktemp -d "${TMPDIR:-/tmp}/rh-python.XXXXXX")
trap 'rm -rf "$py_tmp"' EXIT
(cd controller && maturin build --quiet --out "$py_tmp/wheels")
python3 -m venv "$py_tmp/venv"
wheels=("$py_tmp"/wheels/rh_secrets-*.whl)
"$py_tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[0]}[test]"
# pytest exits 5 when it collected no test: a failure here like any other.
RH_AGENT_BIN="$PWD/target/debug/agent" "$py_tmp/venv/bin/python" -m pytest -q -rs controller/python/tests

case "${E2E:-auto}" in
  skip)
    step "e2e: skipped (E2E=skip)" ;;
  *)
    if docker info >/dev/null 2>&1; then
      step "e2e suite (docker-compose)"
      if [ -x scripts/e2e.sh ]; then scripts/e2e.sh; else echo "e2e: scripts/e2e.sh not present yet"; fi
    elif [ "${E2E:-auto}" = require ]; then
      echo "e2e: no Docker engine answers and E2E=require" >&2; exit 1
    else
      step "e2e: SKIPPED: no Docker engine answers (docker info failed)"
    fi ;;
esac
step "all tests passed"
