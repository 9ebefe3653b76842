#!/usr/bin/env bash
# install-agent.sh: install the rh agent on this node and start it at boot.
#
#   install-agent.sh [--from DIR] [--user USER] [--prefix DIR] [--port N]
#                    [--no-start] [--start-wait SECS]
#                    [-- EXTRA AGENT SERVE ARGS...]
#
#   --from DIR   where `agent`, `rh-agent.service` and `agent-boot.sh` are
#                (default: this script's directory; `agent` may also be given
#                as $RH_AGENT_BIN)
#   --user USER  (root only) the node user the agent serves and runs as
#                (default: root). Its home is the one files are written to.
#   --prefix DIR where the binary goes (default: /usr/local/bin as root,
#                ~/.rh/bin otherwise)
#   --port N     listen on 127.0.0.1:N (default 32300)
#   --no-start   install and enable, but do not start now
#   --start-wait SECS  how long to wait for the started agent to listen
#                (default 5; a pulling agent applies the store's secrets
#                before it listens, `cluster bootstrap` gives it 75)
#
# With systemd as PID 1: writes the unit (a system unit run as USER when root,
# e.g. `sudo install-agent.sh --user "$USER"` as `cluster bootstrap` does for
# a login user with passwordless sudo; a user unit with lingering otherwise),
# reloads, enables and (re)starts it.
# Without systemd (containers, minimal VMs), or when the user manager is not
# reachable: installs agent-boot.sh next to the binary, starts it (the
# supervisor restarts the agent if it dies) and adds an @reboot crontab entry
# when crontab exists. Idempotent: running it again upgrades the binary and
# restarts the agent. Prints where the agent's address and token are.
set -euo pipefail
umask 077

from="$(cd "$(dirname "$0")" && pwd)"
run_user=""
prefix=""
port=""
start=1
start_wait=5
while [ "$#" -gt 0 ]; do
  case "$1" in
    --from) from="$2"; shift ;;
    --user) run_user="$2"; shift ;;
    --prefix) prefix="$2"; shift ;;
    --port) port="$2"; shift ;;
    --no-start) start=0 ;;
    --start-wait) start_wait="$2"; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "install-agent.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "install-agent.sh: $*" >&2; exit 1; }

src_bin="${RH_AGENT_BIN:-$from/agent}"
[ -x "$src_bin" ] || die "no agent binary at $src_bin (use --from DIR or RH_AGENT_BIN)"
# A binary this node cannot run (another architecture) never replaces a working one.
"$src_bin" --version >/dev/null 2>&1 \
  || die "the agent binary does not run on this node ($(uname -m)): not installed"

is_root=0; [ "$(id -u)" = 0 ] && is_root=1
if [ -n "$run_user" ] && [ "$is_root" = 0 ] && [ "$run_user" != "$(id -un)" ]; then
  die "--user needs root"
fi
run_user="${run_user:-$(id -un)}"
# The invoking user's own install serves their $HOME (as the session sets it);
# another user's (root only) serves that user's home from the passwd database.
run_home=""
if [ "$run_user" = "$(id -un)" ] && [ -n "${HOME:-}" ] && [ -d "$HOME" ]; then
  run_home="$HOME"
else
  run_home="$(getent passwd "$run_user" 2>/dev/null | cut -d: -f6 || true)"
fi
if [ -z "$run_home" ] || [ ! -d "$run_home" ]; then die "no home directory for user $run_user"; fi

if [ -z "$prefix" ]; then
  if [ "$is_root" = 1 ]; then prefix=/usr/local/bin; else prefix="$run_home/.rh/bin"; fi
fi
mkdir -p "$prefix" && chmod 0755 "$prefix"
agent_args=()
[ -n "$port" ] && agent_args+=(--listen "127.0.0.1:$port")
agent_args+=("$@")

# Install the binary atomically (a running agent keeps its old inode).
tmp="$(mktemp "$prefix/.agent.XXXXXX")"
cp "$src_bin" "$tmp" && chmod 0755 "$tmp" && mv -f "$tmp" "$prefix/agent"
agent_bin="$prefix/agent"
echo "installed $agent_bin ($("$agent_bin" --version 2>/dev/null || echo agent))"

state_dir="$run_home/.rh/agent"
if [ "$is_root" = 1 ] && [ "$run_user" != root ]; then
  install -d -m 0700 -o "$run_user" "$run_home/.rh" "$state_dir"
else
  mkdir -p "$state_dir" && chmod 700 "$run_home/.rh" "$state_dir"
fi

unit_text() {
  local template="$from/rh-agent.service"
  [ -f "$template" ] || die "no unit template at $template"
  local args="${agent_args[*]:-}"
  sed -e "s|@USER@|$run_user|g" -e "s|@HOME@|$run_home|g" \
      -e "s|@AGENT_BIN@|$agent_bin|g" -e "s|@AGENT_ARGS@|$args|g" "$template"
}

systemd_is_init() { [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

# Stop an agent-boot.sh supervisor an earlier install started (it stops its
# agent), so a unit can take the port.
stop_boot_script() {
  local pid_file="$state_dir/agent-boot.pid"
  [ -f "$pid_file" ] || return 0
  kill -TERM "$(cat "$pid_file")" 2>/dev/null || true
  for _ in $(seq 50); do [ -f "$pid_file" ] || break; sleep 0.1; done
}

install_systemd_system() {
  stop_boot_script
  unit_text >/etc/systemd/system/rh-agent.service
  chmod 0644 /etc/systemd/system/rh-agent.service
  systemctl daemon-reload
  systemctl enable rh-agent.service >/dev/null
  [ "$start" = 1 ] && systemctl restart rh-agent.service
  echo "systemd unit rh-agent.service enabled (runs as $run_user)"
}

install_systemd_user() {
  local dir="$run_home/.config/systemd/user"
  systemctl --user show-environment >/dev/null 2>&1 || return 1
  mkdir -p "$dir"
  unit_text | sed -e '/^User=/d' -e 's/^WantedBy=multi-user.target/WantedBy=default.target/' \
    >"$dir/rh-agent.service"
  systemctl --user daemon-reload
  systemctl --user enable rh-agent.service >/dev/null
  # Keep the user manager (and the agent) running without a login session.
  loginctl enable-linger "$run_user" >/dev/null 2>&1 || \
    echo "note: could not enable lingering; the agent runs while $run_user is logged in" >&2
  [ "$start" = 1 ] && systemctl --user restart rh-agent.service
  echo "systemd user unit rh-agent.service enabled"
}

install_boot_script() {
  local boot="$prefix/agent-boot.sh"
  [ -f "$from/agent-boot.sh" ] || die "no agent-boot.sh in $from"
  cp "$from/agent-boot.sh" "$boot.tmp" && chmod 0755 "$boot.tmp" && mv -f "$boot.tmp" "$boot"
  local as_user=()
  if [ "$is_root" = 1 ] && [ "$run_user" != "$(id -un)" ]; then
    as_user=(su -s /bin/bash "$run_user" -c)
  fi
  local cmd="HOME='$run_home' '$boot' --agent '$agent_bin' --state-dir '$state_dir' -- ${agent_args[*]:-}"
  if command -v crontab >/dev/null 2>&1; then
    local entry="@reboot $cmd >/dev/null 2>&1"
    if [ "${#as_user[@]}" -gt 0 ]; then
      ( crontab -u "$run_user" -l 2>/dev/null | grep -v 'agent-boot.sh' || true; echo "$entry" ) | crontab -u "$run_user" -
    else
      ( crontab -l 2>/dev/null | grep -v 'agent-boot.sh' || true; echo "$entry" ) | crontab -
    fi
    echo "boot: @reboot crontab entry for $run_user"
  else
    echo "note: no systemd and no crontab: run '$boot' from the node's init (containers: as the entrypoint)" >&2
  fi
  if [ "$start" = 1 ]; then
    # Restart: stop a running supervisor (it stops the agent), then start.
    stop_boot_script
    if [ "${#as_user[@]}" -gt 0 ]; then "${as_user[@]}" "$cmd"; else bash -c "$cmd"; fi
  fi
}

# A fresh address file tells us the (re)started agent is up.
[ "$start" = 1 ] && rm -f "$state_dir/agent.addr"
if systemd_is_init; then
  if [ "$is_root" = 1 ]; then
    install_systemd_system
  elif ! install_systemd_user; then
    echo "note: the systemd user manager is not reachable; using the boot script" >&2
    install_boot_script
  fi
else
  install_boot_script
fi

if [ "$start" = 1 ]; then
  case "$start_wait" in ''|*[!0-9]*) die "--start-wait takes whole seconds" ;; esac
  for _ in $(seq $((start_wait * 20))); do
    [ -s "$state_dir/agent.addr" ] && [ -s "$state_dir/agent.pid" ] && break
    sleep 0.05
  done
  if [ -s "$state_dir/agent.addr" ]; then
    echo "agent listening on $(cat "$state_dir/agent.addr"); token in $state_dir/token"
  else
    die "the agent did not start; see $state_dir/agent.log or journalctl -u rh-agent"
  fi
fi
