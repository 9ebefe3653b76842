#!/usr/bin/env bash
# build-agents.sh: build the static node agents that `controller cluster
# bootstrap` sends to Linux nodes, one per node architecture, with
# `cargo zigbuild` (zig as the C compiler and linker for ring, musl libc
# linked in statically), so the same binaries work from a Mac or Linux
# controller and on any Linux distribution, old or new.
#
#   scripts/build-agents.sh [--out DIR] [--target TRIPLE]...
#
#   --out DIR        where to put them (default: target/agents in this
#                    repository, where target/release/controller looks;
#                    `--out ~/.rh/agents` for an installed controller)
#   --target TRIPLE  only this target (repeatable; default: both below)
#
# Writes DIR/<triple>/agent and DIR/<triple>/agent.sha256 (`sha256sum`
# format) for x86_64-unknown-linux-musl and aarch64-unknown-linux-musl.
# Installs what it needs when missing: the rustup targets, and `ziglang` and
# `cargo-zigbuild` from PyPI (scripts/lib.sh ensure_zigbuild).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
. "$repo/scripts/lib.sh"
build_options 18 "$repo/target/agents" AGENT_TARGETS "$@"

die() { echo "build-agents.sh: $*" >&2; exit 1; }

ensure_zigbuild "${targets[@]}" || die "cannot install cargo-zigbuild, zig or the rustup targets"
cd "$repo"
# Where cargo puts what it builds: CARGO_TARGET_DIR, build.target-dir in a
# cargo config, or target/ here. Asked of cargo, never assumed.
metadata="$(cargo metadata --format-version 1 --no-deps)" \
  || die "\`cargo metadata\` failed: cannot tell where cargo puts its builds"
target_dir="$(printf '%s' "$metadata" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" \
  || die "\`cargo metadata\` printed no target_directory"
[ -n "$target_dir" ] || die "\`cargo metadata\` printed an empty target_directory"
for t in "${targets[@]}"; do
  step "agent for $t (cargo zigbuild --release)"
  cargo zigbuild --release --quiet -p agent --target "$t" || die "building the agent for $t failed"
  built="$target_dir/$t/release/agent"
  [ -f "$built" ] || die "cargo zigbuild reported success but left no agent at $built"
  mkdir -p "$out/$t" || die "cannot create $out/$t"
  tmp="$(mktemp "$out/$t/.agent.XXXXXX")" || die "cannot create a temporary file in $out/$t"
  cp "$built" "$tmp" || { rm -f "$tmp"; die "cannot copy $built to $out/$t"; }
  chmod 0755 "$tmp" || { rm -f "$tmp"; die "cannot make $tmp executable"; }
  mv -f "$tmp" "$out/$t/agent" || { rm -f "$tmp"; die "cannot move the agent into $out/$t"; }
  (cd "$out/$t" && sha256sum agent >agent.sha256.tmp && mv -f agent.sha256.tmp agent.sha256) \
    || die "cannot write $out/$t/agent.sha256"
  printf '%s  %s bytes  sha256 %s\n' "$out/$t/agent" "$(wc -c <"$out/$t/agent")" \
    "$(cut -d' ' -f1 "$out/$t/agent.sha256")"
done
