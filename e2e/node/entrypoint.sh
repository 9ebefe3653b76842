#!/bin/bash
# Container entrypoint of an e2e node. MODE `bare`: sshd only (the agent comes
# with `controller cluster bootstrap`). MODE `agent`: sshd (as root, port 22,
# like a VM's), then the node boot script scripts/agent-boot.sh (baked at
# /usr/local/lib/rh/agent-boot.sh) as the node user `ubuntu` in the
# foreground: it supervises the agent, which serves ubuntu's home. (Run as
# root with --with-sshd, the boot script would run the agent as root, and the
# credential files would not belong to the node user.) Host keys are made on
# first boot and kept across restarts; the test public key comes from a
# read-only mount.
set -euo pipefail
mode=${1:-bare}
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
if [ -r /run/rh-e2e/authorized_keys ]; then
  install -o ubuntu -g ubuntu -m 600 /run/rh-e2e/authorized_keys /home/ubuntu/.ssh/authorized_keys
fi

case $mode in
  bare)
    exec /usr/sbin/sshd -D -e ;;
  agent)
    /usr/sbin/sshd -e
    boot=/usr/local/lib/rh/agent-boot.sh
    as_ubuntu=(runuser -u ubuntu -- env HOME=/home/ubuntu USER=ubuntu LOGNAME=ubuntu)
    if [ -s "$boot" ]; then
      exec "${as_ubuntu[@]}" bash "$boot" --foreground --agent /usr/local/bin/agent
    fi
    # Fallback when the image was built without scripts/agent-boot.sh.
    while :; do
      "${as_ubuntu[@]}" /usr/local/bin/agent serve || true
      echo "rh-node-entry: agent exited, restarting in 1 s" >&2
      sleep 1
    done ;;
  *)
    exec "$@" ;;
esac
