"""While a call runs, its ``controller`` child (and the ssh it starts) hold no
value in ``/proc/<pid>/cmdline`` (readable by every user, what ``ps`` shows)
nor in ``/proc/<pid>/environ``: values from ``values=`` and from this
process's environment go through stdin. The call is held by a "node" whose
sshd accepts and never speaks; the test reads ``/proc`` once the connection
arrives (the controller has read its stdin by then), then closes the socket
and the call fails with an error that holds no value either.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

import rh_secrets as rh
from rh_secrets import _cli

VALUE = "rhpy-value-marker-" + uuid.uuid4().hex
ENV_VALUE = "rhpy-env-marker-" + uuid.uuid4().hex


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def read_proc(pid: int, what: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except OSError:  # gone meanwhile
        return None


@pytest.fixture
def silent_node(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Cluster ``hold``: one host whose "sshd" accepts and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  UserKnownHostsFile {tmp_path}/known_hosts\n  GlobalKnownHostsFile /dev/null\n")
    monkeypatch.setenv("RH_SSH_CONFIG", str(config))
    _cli.run(["cluster", "add", "hold", "--host", f"127.0.0.1:{port}", "--user", getpass.getuser()])
    yield listener
    listener.close()


CALLS = {
    "to": lambda c, s: s.to(c),
    "to with an env": lambda c, s: rh.provider_secret("openai").to(c, env=rh.env(secrets=[s])),
    "sync_secrets": lambda c, s: c.sync_secrets(["openai", s]),
    "run with an env": lambda c, s: c.run("true", env=rh.env(secrets=["openai", s])),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_values_stay_out_of_the_childs_cmdline_and_environ(call, silent_node, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_VALUE)
    secret = rh.provider_secret("lambda", values={"api_key": VALUE})
    cluster = rh.cluster("hold")
    failure: list[BaseException] = []

    def go():
        try:
            CALLS[call](cluster, secret)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            failure.append(e)

    worker = threading.Thread(target=go)
    worker.start()
    silent_node.settimeout(120)  # a hang guard: the connection comes at once
    conn, _ = silent_node.accept()
    try:
        pids = children_of(os.getpid())
        seen = {pid: (read_proc(pid, "cmdline"), read_proc(pid, "environ")) for pid in pids}
        controllers = [p for p, (cmd, _) in seen.items() if cmd and cmd.split(b"\0")[0].endswith(b"controller")]
        assert controllers, f"no controller among the children: {[c for c, _ in seen.values()]}"
        for pid, (cmdline, environ) in seen.items():
            for marker in (VALUE, ENV_VALUE):
                assert marker.encode() not in (cmdline or b""), f"{marker} in the cmdline of {pid}"
                assert marker.encode() not in (environ or b""), f"{marker} in the environ of {pid}"
        environ = seen[controllers[0]][1] or b""
        # The environ was readable (not a vacuous pass) and holds no provider variable.
        assert b"HOME=" in environ and b"OPENAI_API_KEY=" not in environ, environ.split(b"\0")
    finally:
        conn.close()
        silent_node.close()
        worker.join(timeout=120)
    assert not worker.is_alive()
    assert failure and isinstance(failure[0], rh.SecretsError), failure
    error = failure[0]
    for marker in (VALUE, ENV_VALUE):
        assert marker not in str(error) and marker not in repr(error)
        assert marker not in repr(error.nodes)
        assert marker not in repr(secret) and marker not in str(vars(secret))
