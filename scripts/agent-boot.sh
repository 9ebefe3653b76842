#!/usr/bin/env bash
# agent-boot.sh: start the rh agent at boot on a node without systemd, and
# keep it running. Containers use it as their entrypoint.
#
#   agent-boot.sh [--with-sshd] [--foreground] [--agent PATH] [--state-dir DIR]
#                 [-- EXTRA AGENT SERVE ARGS...]
#
#   --with-sshd     start sshd first (host keys generated if missing), for
#                   containers that are reached over SSH
#   --foreground    supervise in the foreground (container entrypoint); by
#                   default the supervisor detaches and this script returns
#   --agent PATH    the agent binary (default: $RH_AGENT_BIN, ~/.rh/bin/agent,
#                   /usr/local/bin/agent, or `agent` on PATH)
#   --state-dir DIR the agent's state dir (default: $HOME/.rh/agent)
#
# The supervisor runs `agent serve --home $HOME --state-dir DIR ...`, appends
# its output to DIR/agent.log (mode 0600; the agent never logs a value),
# restarts it when it dies (1 s, growing to 10 s if it keeps dying), and on
# SIGTERM/SIGINT stops the agent (which stops its env processes) and exits.
# Running it again while a supervisor is alive does nothing (DIR/agent-boot.pid).
set -uo pipefail
umask 077

with_sshd=0
foreground=0
agent_bin="${RH_AGENT_BIN:-}"
state_dir=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --with-sshd) with_sshd=1 ;;
    --foreground) foreground=1 ;;
    --agent) agent_bin="$2"; shift ;;
    --state-dir) state_dir="$2"; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "agent-boot.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

: "${HOME:?HOME must be set}"
state_dir="${state_dir:-$HOME/.rh/agent}"
if [ -z "$agent_bin" ]; then
  for candidate in "$HOME/.rh/bin/agent" /usr/local/bin/agent "$(command -v agent 2>/dev/null)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then agent_bin="$candidate"; break; fi
  done
fi
if [ -z "$agent_bin" ] || [ ! -x "$agent_bin" ]; then
  echo "agent-boot.sh: no agent binary found (use --agent PATH or RH_AGENT_BIN)" >&2
  exit 1
fi
mkdir -p "$state_dir" && chmod 700 "$state_dir"
log="$state_dir/agent.log"
touch "$log" && chmod 600 "$log"

start_sshd() {
  local sshd=/usr/sbin/sshd
  [ -x "$sshd" ] || sshd="$(command -v sshd 2>/dev/null || true)"
  if [ -z "$sshd" ]; then
    echo "agent-boot.sh: --with-sshd given but sshd is not installed" >&2
    return 1
  fi
  mkdir -p /run/sshd 2>/dev/null || true
  ssh-keygen -A >/dev/null 2>&1 || true
  "$sshd" && echo "agent-boot.sh: sshd started" >>"$log"
}

supervise() {
  local child="" delay=1 stopping=0 started rc
  trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
  echo "$$" >"$state_dir/agent-boot.pid"
  while [ "$stopping" = 0 ]; do
    started=$(date +%s)
    "$agent_bin" serve --home "$HOME" --state-dir "$state_dir" "$@" >>"$log" 2>&1 &
    child=$!
    # `wait` returns early when a trapped signal arrives; wait again for the exit.
    wait "$child"; rc=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
    child=""
    [ "$stopping" = 1 ] && break
    if [ $(( $(date +%s) - started )) -gt 30 ]; then delay=1; fi
    echo "agent-boot.sh: agent exited with status $rc; restarting in ${delay}s" >>"$log"
    sleep "$delay" &
    wait $! 2>/dev/null
    delay=$(( delay * 2 > 10 ? 10 : delay * 2 ))
  done
  rm -f "$state_dir/agent-boot.pid"
  echo "agent-boot.sh: stopped" >>"$log"
}

if [ -f "$state_dir/agent-boot.pid" ] && kill -0 "$(cat "$state_dir/agent-boot.pid")" 2>/dev/null; then
  echo "agent-boot.sh: already running (pid $(cat "$state_dir/agent-boot.pid"))"
  [ "$foreground" = 1 ] || exit 0
  # In the foreground (entrypoint) a stale pid from an old container is not ours.
fi

if [ "$with_sshd" = 1 ]; then start_sshd || exit 1; fi

if [ "$foreground" = 1 ]; then
  supervise "$@"
else
  # Detach: new session, no terminal, output to the log.
  detach=""
  command -v setsid >/dev/null 2>&1 && detach=setsid
  nohup $detach bash "$0" --foreground --agent "$agent_bin" --state-dir "$state_dir" -- "$@" \
    >>"$log" 2>&1 </dev/null &
  echo "agent-boot.sh: agent supervisor started (log: $log)"
fi
