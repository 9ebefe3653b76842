#!/bin/bash
# Container entrypoint of an e2e node. MODE `bare`: sshd only (the agent comes
# with `controller cluster bootstrap`). MODE `agent`: the node boot script
# (scripts/agent-boot.sh --with-sshd, baked at /usr/local/lib/rh/agent-boot.sh)
# starts sshd and the agent as `ubuntu`. Host keys are made on first boot and
# kept across restarts; the test public key comes from a read-only mount.
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
    boot=/usr/local/lib/rh/agent-boot.sh
    if [ -s "$boot" ]; then
      exec "$boot" --with-sshd
    fi
    # Fallback until scripts/agent-boot.sh exists: sshd in the background, the
    # agent as `ubuntu` in the foreground, restarted when it dies.
    /usr/sbin/sshd -e
    while :; do
      runuser -u ubuntu -- env HOME=/home/ubuntu /usr/local/bin/agent serve || true
      echo "rh-node-entry: agent exited, restarting in 1 s" >&2
      sleep 1
    done ;;
  *)
    exec "$@" ;;
esac
