#!/usr/bin/env bash
# Builds the e2e images without any container registry:
#   rh-e2e-base:bookworm  debootstrap minbase + sshd, curl, procps (reused when present;
#                         another suite may reuse it, keep the name)
#   rh-e2e-node:<project> base + user `ubuntu` (home, bash, key-only sshd) + entrypoint;
#                         "bare" nodes run it (sshd only, agent comes by `cluster bootstrap`)
#   rh-e2e-agent:<project> node + the static x86_64 musl `agent` (scripts/build-agents.sh)
#                         + scripts/agent-boot.sh
#   rh-e2e-base-systemd:bookworm  debootstrap minbase + sshd + systemd, systemd-sysv, dbus, sudo
#   rh-e2e-systemd:<project> that base + user `ubuntu` (passwordless sudo), sshd as a unit,
#                         systemd as PID 1; bootstrap installs the agent's system unit
# The Debian mirror is read at run time from the host's apt sources, never written here.
# Usage: e2e/build-images.sh [--base-only] [--rebuild-base]
# Env:   RH_E2E_AGENT_BIN  the agent baked into the agent image (default: the static
#                          x86_64 agent <repo>/target/agents/x86_64-unknown-linux-musl/agent)
set -euo pipefail
cd "$(dirname "$0")/.."
. e2e/env.sh
BUILD=$RH_E2E_STATE
AGENT_BIN=${RH_E2E_AGENT_BIN:-$PWD/target/agents/x86_64-unknown-linux-musl/agent}
mkdir -p "$BUILD"
base_only=0 rebuild_base=0
for a in "$@"; do
  case $a in
    --base-only) base_only=1 ;;
    --rebuild-base) rebuild_base=1 ;;
    *) echo "build-images.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
log() { printf '[build-images] %s\n' "$*" >&2; }

# The bookworm mirror this host already uses (deb822 `URIs:` of the entry whose
# Suites has `bookworm`, else a classic sources.list line).
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -r "$f" ]; then
    awk '
      /^[[:space:]]*$/ { if (uri != "" && suite ~ /(^| )bookworm( |$)/) { print uri; exit } uri=""; suite=""; next }
      /^URIs:/ { uri=$2 }
      /^Suites:/ { $1=""; suite=$0 " " }
      END { if (uri != "" && suite ~ /(^| )bookworm( |$)/) print uri }
    ' "$f" | head -n1
    return
  fi
  grep -hE '^deb[[:space:]]+[^ ]+[[:space:]]+bookworm[[:space:]]' /etc/apt/sources.list 2>/dev/null \
    | awk '{print $2}' | head -n1
}

# build_base IMAGE EXTRA_PACKAGES: a debootstrap minbase rootfs with sshd and
# the given packages, imported as IMAGE (reused when present).
build_base() {
  local image=$1 extra=$2
  if [ "$rebuild_base" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image present, reused"
    return
  fi
  command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
  local mirror rootfs
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { log "no bookworm mirror found in the host's apt sources"; exit 1; }
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rh-e2e-rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' RETURN
  log "debootstrap bookworm (minbase) from the host's mirror into $rootfs"
  debootstrap --variant=minbase \
    --include=openssh-server,ca-certificates,curl,procps,iproute2"$extra" \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # Small and deterministic: no apt lists or caches, no host keys (made per container).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  find "$rootfs/var/log" -type f -delete
  mkdir -p "$rootfs/run/sshd"
  log "docker import -> $image"
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
}

build_node_images() {
  local ctx=$BUILD/image-ctx
  rm -rf "$ctx" && mkdir -p "$ctx"
  sed "s|^FROM rh-e2e-node:.*|FROM $RH_E2E_NODE_IMAGE|" e2e/node/Dockerfile.agent >"$ctx/Dockerfile.agent"
  cp e2e/node/entrypoint.sh e2e/node/sshd_config e2e/node/rh-e2e-node-keys.service "$ctx/"
  log "docker build $RH_E2E_NODE_IMAGE"
  docker build -q -t "$RH_E2E_NODE_IMAGE" -f e2e/node/Dockerfile.node "$ctx" >"$BUILD/docker-build.log" 2>&1 \
    || { cat "$BUILD/docker-build.log" >&2; exit 1; }

  sed "s|^FROM rh-e2e-base-systemd:.*|FROM $RH_E2E_SYSTEMD_BASE_IMAGE|" e2e/node/Dockerfile.systemd >"$ctx/Dockerfile.systemd"
  log "docker build $RH_E2E_SYSTEMD_IMAGE"
  docker build -q -t "$RH_E2E_SYSTEMD_IMAGE" -f "$ctx/Dockerfile.systemd" "$ctx" >"$BUILD/docker-build.log" 2>&1 \
    || { cat "$BUILD/docker-build.log" >&2; exit 1; }

  [ -x "$AGENT_BIN" ] || { log "no agent binary at $AGENT_BIN (scripts/build-agents.sh)"; exit 1; }
  cp "$AGENT_BIN" "$ctx/agent"
  if [ -f scripts/agent-boot.sh ]; then
    cp scripts/agent-boot.sh "$ctx/agent-boot.sh"
  else
    # Not merged yet: an empty marker; the entrypoint falls back to its own loop.
    : >"$ctx/agent-boot.sh"
  fi
  log "docker build $RH_E2E_AGENT_IMAGE"
  docker build -q -t "$RH_E2E_AGENT_IMAGE" -f "$ctx/Dockerfile.agent" "$ctx" >"$BUILD/docker-build.log" 2>&1 \
    || { cat "$BUILD/docker-build.log" >&2; exit 1; }
}

build_base "$RH_E2E_BASE_IMAGE" ""
if [ "$base_only" = 0 ]; then
  # The base of the node with systemd as PID 1 (bootstrap installs the unit there).
  build_base "$RH_E2E_SYSTEMD_BASE_IMAGE" ",systemd,systemd-sysv,dbus,sudo"
  build_node_images
fi
log "images ready"
