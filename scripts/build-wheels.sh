#!/usr/bin/env bash
# build-wheels.sh: build the rh-secrets wheels (the `controller` binary and
# the pure-Python module `rh_secrets`, from controller/pyproject.toml) for
# the platforms the controller runs on, with `maturin build --release --zig`:
# zig is the C compiler and linker (ring's C parts, the final link, and the
# old-glibc / musl / macOS libc stubs), so the build needs only rustup
# targets and PyPI packages, and users need no compiler at all.
#
#   scripts/build-wheels.sh [--out DIR] [--target TRIPLE]...
#
#   Linux  x86_64-unknown-linux-gnu  aarch64-unknown-linux-gnu   manylinux2014 (glibc >= 2.17)
#          x86_64-unknown-linux-musl aarch64-unknown-linux-musl  musllinux_1_2
#   macOS  x86_64-apple-darwin       aarch64-apple-darwin        built and linked with zig
#
#   --out DIR        where the wheels go (default: target/wheels)
#   --target TRIPLE  only this target (repeatable; default: all six)
#
# Prints each wheel with its size. Installs what it needs when missing: the
# rustup targets, maturin, ziglang and cargo-zigbuild from PyPI
# (scripts/lib.sh ensure_maturin, ensure_zigbuild).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
. "$repo/scripts/lib.sh"
build_options 21 "$repo/target/wheels" WHEEL_TARGETS "$@"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

ensure_maturin
ensure_zigbuild "${targets[@]}"
mkdir -p "$out"
cd "$repo/controller"
for t in "${targets[@]}"; do
  case "$t" in
    *-linux-gnu) compat=(--compatibility manylinux2014) ;;
    *-linux-musl) compat=(--compatibility musllinux_1_2) ;;
    *-apple-darwin) compat=() ;;
    *) echo "build-wheels.sh: no wheel platform for $t" >&2; exit 2 ;;
  esac
  step "wheel for $t (maturin build --release --zig)"
  maturin build --release --zig --quiet --target "$t" ${compat[@]+"${compat[@]}"} --out "$out"
done
for w in "$out"/rh_secrets-*.whl; do
  printf '%s  %s bytes\n' "$w" "$(wc -c <"$w")"
done
