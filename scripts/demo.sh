#!/usr/bin/env bash
# The README's main job on the `local` cluster, end to end, without touching
# your real credentials: a temp HOME with fixture (fake) credentials, then
#   controller secret detect            what is configured here
#   controller sync --cluster local     push everything to the local agent
#                                       (started in the background on demand)
#   the files and modes the agent wrote, the vars an env process sees
#   (proved by length only: no value is ever printed), and the agent stopped.
# DEMO_HOME=/some/dir uses that directory as HOME instead of a temp one
# (it must already hold credentials; the demo never creates files there
# other than what the controller and agent write under ~/.rh).
# Uses target/release binaries when built, else target/debug (override with RH_BIN_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${RH_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  if [ -x target/release/controller ] && [ -x target/release/agent ]; then
    bin_dir=$PWD/target/release
  else
    echo "demo: building debug binaries (cargo build -p controller -p agent)" >&2
    cargo build -q -p controller -p agent
    bin_dir=$PWD/target/debug
  fi
fi
controller=$bin_dir/controller

if [ -n "${DEMO_HOME:-}" ]; then
  home=$DEMO_HOME
  own_home=0
else
  home=$(mktemp -d /tmp/rh-demo.XXXXXX)
  own_home=1
  chmod 700 "$home"
  # Fixture credentials (fake values, shaped like the real files).
  mkdir -p "$home/.aws" "$home/.cache/huggingface" "$home/.ssh"
  printf '[default]\naws_access_key_id = AKIADEMOFIXTURE00001\naws_secret_access_key = demo/fixture/secret/key/0000000000000001\nregion = eu-west-1\n' \
    >"$home/.aws/credentials"
  printf 'hf_demofixturetoken000000000001' >"$home/.cache/huggingface/token"
  ssh-keygen -q -t ed25519 -N "" -C demo -f "$home/.ssh/id_demo"
fi

stop_agent() {
  if [ -s "$home/.rh/agent/agent.pid" ]; then
    kill "$(cat "$home/.rh/agent/agent.pid")" 2>/dev/null || true
    echo "demo: local agent stopped"
  fi
  if [ "$own_home" = 1 ]; then rm -rf "$home"; fi
}
trap stop_agent EXIT

# A clean environment: only HOME, PATH and (for the temp home) one API key.
run() {
  if [ "$own_home" = 1 ]; then
    env -i HOME="$home" PATH="$bin_dir:/usr/bin:/bin" RH_AGENT_BIN="$bin_dir/agent" \
      RH_LOCAL_AGENT_LISTEN="${RH_LOCAL_AGENT_LISTEN:-127.0.0.1:0}" \
      OPENAI_API_KEY=sk-demo-fixture-0000000000000000000001 "$@"
  else
    env HOME="$home" PATH="$bin_dir:$PATH" RH_AGENT_BIN="$bin_dir/agent" \
      RH_LOCAL_AGENT_LISTEN="${RH_LOCAL_AGENT_LISTEN:-127.0.0.1:0}" "$@"
  fi
}
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "demo: HOME=$home"
say "controller secret detect"
run "$controller" secret detect

say "controller sync --cluster local"
start=$(date +%s%N)
run "$controller" sync --cluster local
end=$(date +%s%N)
echo "(sync took $(( (end - start) / 1000000 )) ms, including starting the agent)"

say "controller sync --cluster local   # again: nothing changes"
start=$(date +%s%N)
run "$controller" sync --cluster local
end=$(date +%s%N)
echo "(sync took $(( (end - start) / 1000000 )) ms)"

say "controller send huggingface --cluster local --path ~/synced/hf_token   # a file the agent creates"
# shellcheck disable=SC2088  # a literal ~: the agent resolves it in the node home
run "$controller" send huggingface --cluster local --path '~/synced/hf_token'

say "files and modes (the credential files above were already here; the agent left them as they were)"
for f in .aws/credentials .cache/huggingface/token .ssh/id_demo synced/hf_token .rh/agent/token; do
  [ -e "$home/$f" ] && stat -c '%A %a  ~/%n' "$home/$f" | sed "s|$home/||"
done
stat -c '%A %a  ~/%n' "$home/synced" "$home/.rh" "$home/.rh/agent" | sed "s|$home/||"

say "controller run --cluster local -- printenv OPENAI_API_KEY | wc -c   # the value's length, never the value"
run "$controller" run --cluster local -- printenv OPENAI_API_KEY | wc -c

say "controller status --cluster local"
run "$controller" status --cluster local
