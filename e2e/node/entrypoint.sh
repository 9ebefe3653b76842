#!/bin/bash
# Container entrypoint of an e2e node. MODE `bare`: sshd only (the agent comes
# with `controller cluster bootstrap`). MODE `pull`: no sshd; the node bundle
# mounted at /run/rh-e2e/bundle.json (from `controller cluster enroll`, as
# cloud-init user-data would carry it) is installed 0600 for `ubuntu` in its
# 0700 state dir with a pull config, and the static agent runs as ubuntu in
# pull mode in the foreground: it listens once its first poll is applied, and
# exits (the container with it) when the store refuses the bundle.
# MODE `agent`: sshd (as root, port 22,
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

as_ubuntu=(runuser -u ubuntu -- env HOME=/home/ubuntu USER=ubuntu LOGNAME=ubuntu)
case $mode in
  bare)
    exec /usr/sbin/sshd -D -e ;;
  pull)
    state=/home/ubuntu/.rh/agent
    install -d -o ubuntu -g ubuntu -m 700 /home/ubuntu/.rh "$state"
    # Whole or absent (temp file + rename), never readable by others.
    install -o ubuntu -g ubuntu -m 600 /run/rh-e2e/bundle.json "$state/.bundle.json.tmp"
    mv -f "$state/.bundle.json.tmp" "$state/bundle.json"
    {
      echo "# written by the e2e node entrypoint (pull mode)"
      echo "pull_bundle: $state/bundle.json"
      if [ -n "${RH_E2E_POLL_SECS:-}" ]; then echo "poll_interval_secs: $RH_E2E_POLL_SECS"; fi
      # Vars the store's secrets may set here (names checked by cluster.sh).
      if [ -n "${RH_E2E_ALLOW_VARS:-}" ]; then
        printf 'allow_vars: [%s]\n' "${RH_E2E_ALLOW_VARS// /, }"
      fi
      # The test store speaks plain http on the private node network.
      if [ "${RH_E2E_PULL_ALLOW_HTTP:-0}" = 1 ]; then echo "pull_allow_insecure_http: true"; fi
    } | "${as_ubuntu[@]}" bash -c "umask 077 && cat >$state/pull.yaml"
    exec "${as_ubuntu[@]}" /usr/local/bin/agent serve --home /home/ubuntu \
      --state-dir "$state" --config "$state/pull.yaml" ;;
  agent)
    /usr/sbin/sshd -e
    boot=/usr/local/lib/rh/agent-boot.sh
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
