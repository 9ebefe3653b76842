"""Running the ``controller`` binary for the API, and its errors.

Values never travel in the child's argv or environment (both readable in
``/proc/<pid>``; ``cmdline`` by every user): the child's real environment is
an allow-list of what ssh, a locale and the controller's own settings need,
and everything else of ``os.environ`` (provider variables, ``VAULT_TOKEN``)
goes to it as the first line of stdin (``controller --stdin-env``), followed
by the secrets themselves as JSON (``--secret-json -``, ``--values-json -``).
Error messages are the CLI's stderr, which never holds a value.
"""

from __future__ import annotations

# Imported here rather than at the first call: `json` (with `re`) is most of
# a first `.to()`'s cost otherwise; `import rh_secrets` stays a few ms.
import json
import os
import select

from ._bin import find_controller_bin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping

#: What the child gets in its real environment: no credential is among them.
#: The controller reads the rest (through ``--stdin-env``) only to find secrets.
CHILD_ENV = frozenset(
    {
        "HOME",
        "PATH",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "LC_MESSAGES",
        "TZ",
        "TERM",
        "TMPDIR",
        "NO_COLOR",
        # ssh: the agent holding the cluster keys.
        "SSH_AUTH_SOCK",
        # The controller's and the local agent's own settings (never values).
        "RH_AGENT_BIN",
        "RH_AGENTS_DIR",
        "RH_LOCAL_AGENT_LISTEN",
        "RH_SSH_CONFIG",
        "RH_SSH_PERSIST",
        "RH_LOG",
        "RH_VAULT_ALLOW_HTTP",
        "RUST_LOG",
        "RUST_BACKTRACE",
        # Where the store is (its token is not here: it comes through stdin).
        "VAULT_ADDR",
        "VAULT_CACERT",
    }
)

#: How the CLI words "there is no such thing" (exit 1 or 2). Kept next to the
#: exit codes they refine; the tests check each maps to NotFoundError.
_NOT_FOUND = (
    "no saved or detected secret named",  # secret show/write NAME
    "no saved secret named",  # secret delete NAME
    "unknown secret(s)",  # --secret S
    "unknown cluster",  # --cluster C
    "unknown env",  # env NAME
    "credentials found (",  # no <provider> credentials found (...)
    "is not in the remote store",  # vault pull NAME
)


class SecretsError(Exception):
    """A ``controller`` command failed. ``str()`` is the CLI's message (never a
    value); ``exit_code`` its exit status; ``nodes`` the per-node rows of its
    ``--json`` report when it printed one (names, statuses, reasons)."""

    def __init__(self, message: str, exit_code: int = 1, nodes: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.nodes: list[dict[str, Any]] = nodes or []


class UsageError(SecretsError, ValueError):
    """Bad arguments, names or flags (the CLI's exit code 2)."""


class NotFoundError(SecretsError, LookupError):
    """No such secret, cluster, env, or no credentials where a provider keeps them."""


class PartialFailureError(SecretsError):
    """Some nodes failed and others succeeded (exit code 3). ``nodes`` holds
    one row per node: ``node``, ``ok``, ``error`` and the per-secret ``results``
    (or, for ``Cluster.run``, the node's ``exit_code`` and output)."""


def child_env() -> dict[str, str]:
    """The child's real environment: the allow-listed variables of this process."""
    return {k: v for k, v in os.environ.items() if k in CHILD_ENV}


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in os.environ (surrogateescape)
        return False
    return True


def _env_line(extra: Mapping[str, str] | None) -> bytes:
    env = {k: v for k, v in os.environ.items() if _encodable(k) and _encodable(v)}
    if extra:
        env.update(extra)
    return (json.dumps(env, separators=(",", ":")) + "\n").encode("utf-8")


def error(code: int, stderr: str, stdout: str) -> SecretsError:
    """The exception for a command that exited with ``code``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
    message = "; ".join(errors) if errors else "\n".join(lines) or f"controller exited with status {code}"
    nodes = _report_nodes(stdout)
    if code < 0:
        return SecretsError(f"controller was killed by signal {-code}", code, nodes)
    if code == 3:
        return PartialFailureError(message, code, nodes)
    if any(marker in message for marker in _NOT_FOUND):
        return NotFoundError(message, code, nodes)
    if code == 2:
        if "unexpected argument '--stdin-env'" in message or "unexpected argument '--secret-json'" in message:
            message = (
                f"the controller at {find_controller_bin()} is older than this package "
                f"(install the matching rh-secrets wheel): {message}"
            )
        return UsageError(message, code, nodes)
    return SecretsError(message, code, nodes)


def _report_nodes(stdout: str) -> list[dict[str, Any]]:
    if not stdout.lstrip().startswith("{"):
        return []
    try:
        doc = json.loads(stdout)
    except ValueError:
        return []
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    return nodes if isinstance(nodes, list) else []


def _spawn(argv: list[str], data: bytes, env: Mapping[str, str]) -> tuple[int, bytes, bytes]:
    """Run ``argv`` with ``data`` on its stdin; its exit code, stdout and stderr.

    ``os.posix_spawn`` and a poll loop rather than ``subprocess``, whose import
    (``threading``, ``locale``, ``re``...) costs more than the controller's
    own run of a warm ``.to()``. The pipes are the only descriptors the child
    inherits (Python's are close-on-exec)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # What fits in the pipe goes in before the child starts: it reads its
    # stdin at once without waiting for this process to be scheduled again.
    view = memoryview(data)
    os.set_blocking(in_w, False)
    try:
        sent = os.write(in_w, view)
    except BlockingIOError:
        sent = 0
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
        )
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    live = {out_r, err_r}
    if sent < len(view):
        poller.register(in_w, select.POLLOUT)
        live.add(in_w)
    else:
        os.close(in_w)
    try:
        while live:
            for fd, _event in poller.poll():
                if fd == in_w:
                    try:
                        sent += os.write(in_w, view[sent : sent + 65536])
                    except BrokenPipeError:  # the child stopped reading
                        sent = len(view)
                    done = sent >= len(view)
                else:
                    chunk = os.read(fd, 65536)
                    chunks[fd].append(chunk)
                    done = not chunk
                if done:
                    poller.unregister(fd)
                    os.close(fd)
                    live.discard(fd)
    finally:
        for fd in live:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return code, b"".join(chunks[out_r]), b"".join(chunks[err_r])


def run(
    args: Iterable[str],
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    ok: Iterable[int] = (0,),
) -> tuple[int, str, str]:
    """Run ``controller --stdin-env ARGS``: the environment (this process's,
    plus ``env``) on stdin's first line, then ``stdin``. Returns the exit code,
    stdout and stderr; raises :class:`SecretsError` (or a subclass) for an
    exit code not in ``ok``."""
    argv = [find_controller_bin(), "--stdin-env", *args]
    data = _env_line(env) + (stdin.encode("utf-8") if stdin else b"")
    code, stdout, stderr = _spawn(argv, data, child_env())
    out = stdout.decode("utf-8", "replace")
    err = stderr.decode("utf-8", "replace")
    if code not in tuple(ok):
        raise error(code, err, out)
    return code, out, err


def run_json(
    args: Iterable[str],
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """:func:`run` a command that prints one JSON document (``--json``)."""
    _, out, _ = run(args, stdin=stdin, env=env)
    return json.loads(out)
