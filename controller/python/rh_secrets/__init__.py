"""rh-secrets: the secrets API of the Runhouse guide, run by the ``controller``
binary this wheel carries.

    import rh_secrets as rh

    aws = rh.provider_secret("aws")              # ~/.aws/credentials, read when used
    cluster = rh.cluster("gpu")                  # added with `controller cluster add gpu --host ...`
    aws.to(cluster)                              # merged into ~/.aws/credentials on every node, 0600
    openai = rh.provider_secret("openai")        # OPENAI_API_KEY of this process
    openai.to(cluster, env=rh.env())             # set in the nodes' base_env process
    cluster.sync_secrets(["aws", "gcp", openai])
    cluster.run("python train.py", env=rh.env(secrets=["aws", openai]))

Each call runs the ``controller`` CLI (found next to this package, then on
``PATH``: see ``_bin``). Values go to it as JSON on stdin, never in its argv or
environment (``_cli``). A secret's ``repr``/``str`` never show values;
``.values`` is the one way to read them. Failures raise :class:`SecretsError`
(:class:`UsageError`, :class:`NotFoundError`, :class:`PartialFailureError`
with the per-node rows), whose text is the CLI's message, never a value.
"""

from __future__ import annotations

import os

from ._cli import (
    NotFoundError,
    PartialFailureError,
    SecretsError,
    UsageError,
    error as _error,
    run as _run,
    run_json as _run_json,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Sequence, Union

    SecretRef = Union[str, "Secret"]
    EnvRef = Union[str, "Env"]
    ClusterRef = Union[str, "Cluster"]

__all__ = [
    "Cluster",
    "Env",
    "NotFoundError",
    "PartialFailureError",
    "ProviderSecret",
    "RunResult",
    "Secret",
    "SecretsError",
    "UsageError",
    "cluster",
    "env",
    "login",
    "logout",
    "ondemand_cluster",
    "provider_secret",
    "secret",
]

#: The env a secret's variables go to when none is named (as in Runhouse).
DEFAULT_ENV = "base_env"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("rh-secrets")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dumps(doc: Any) -> str:
    import json

    try:
        return json.dumps(doc)
    except (TypeError, ValueError) as e:  # names a type, never a value
        raise UsageError(f"secret values must be JSON (strings, numbers, lists, dicts): {e}", 2) from None


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _Hidden:
    """A secret's values. Its repr is redacted, so ``vars(secret)``, a debugger
    or a traceback's locals never print them."""

    __slots__ = ("_v",)

    def __init__(self, values: Mapping[str, Any]):
        if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
            raise UsageError("values must be a dict with string keys", 2)
        self._v = _copy(dict(values))

    def copy(self) -> dict[str, Any]:
        return {k: _copy(v) for k, v in self._v.items()}

    def keys(self) -> list[str]:
        return sorted(self._v)

    def __repr__(self) -> str:
        return "<redacted>"


_PROVIDERS: list[dict[str, Any]] = []


def _providers() -> list[dict[str, Any]]:
    """``controller providers --json``, once per process."""
    if not _PROVIDERS:
        _PROVIDERS.extend(_run_json(["providers", "--json"]))
    return _PROVIDERS


def _provider(provider_id: str | None) -> dict[str, Any] | None:
    return next((p for p in _providers() if p["id"] == provider_id), None)


def _vault_configured() -> bool:
    """Whether ``controller login`` saved a remote store (``~/.rh/config``)."""
    import json

    try:
        with open(os.path.join(os.path.expanduser("~"), ".rh", "config"), encoding="utf-8") as f:
            return isinstance(json.load(f).get("vault"), dict)
    except (OSError, ValueError, AttributeError):
        return False


class Secret:
    """A named set of values (``rh.secret``). Provider secrets
    (:class:`ProviderSecret`) also know where they live: a file (``path``) or
    environment variables (``env_vars``, value key -> variable name)."""

    def __init__(
        self,
        name: str | None = None,
        values: Mapping[str, Any] | None = None,
        provider: str | None = None,
        path: str | os.PathLike[str] | None = None,
        env_vars: Mapping[str, str] | None = None,
    ):
        self.name = name
        self.provider = provider
        self._path = os.fspath(path) if path is not None else None
        self._env_vars = dict(env_vars) if env_vars is not None else None
        self._values = _Hidden(values) if values is not None else None
        # Where a secret read from its provider's defaults was found.
        self._found: dict[str, Any] | None = None

    # -- what it is -------------------------------------------------------

    @property
    def values(self) -> dict[str, Any]:
        """The values, by key (a copy). A provider secret built without values
        reads them now from its path, env vars or the provider's defaults."""
        if self._values is not None:
            return self._values.copy()
        values: dict[str, Any] = self._extract()["values"]
        return values

    @values.setter
    def values(self, values: Mapping[str, Any]) -> None:
        self._values = _Hidden(values)

    @property
    def path(self) -> str | None:
        """Where the secret lives on disk (``~/...``), if anywhere."""
        if self._path is not None or not self._lazy():
            return self._path
        found: str | None = self._location()["path"]
        return found

    @path.setter
    def path(self, path: str | os.PathLike[str] | None) -> None:
        self._path = os.fspath(path) if path is not None else None

    @property
    def env_vars(self) -> dict[str, str] | None:
        """Value key -> environment variable name, if the secret has some."""
        if self._env_vars is not None or not self._lazy():
            return dict(self._env_vars) if self._env_vars is not None else None
        found = self._location()["env_vars"]
        return dict(found) if found else None

    def __repr__(self) -> str:
        parts = [repr(self.name)]
        if self.provider is not None:
            parts.append(f"provider={self.provider!r}")
        if self._path is not None:
            parts.append(f"path={self._path!r}")
        if self._env_vars:
            parts.append(f"env_vars={sorted(self._env_vars.values())!r}")
        if self._values is not None:
            parts.append(f"keys={self._values.keys()!r}")
        return f"<{type(self).__name__} {' '.join(parts)}>"

    __str__ = __repr__

    # -- the controller's view of it ---------------------------------------

    def _lazy(self) -> bool:
        return self._values is None and self.provider is not None

    def _name(self) -> str:
        name = self.name or self.provider
        if not name:
            raise UsageError("this secret has no name: give it one (name=...)", 2)
        return name

    def _entry(self) -> dict[str, Any]:
        """The secret as ``--secret-json`` takes it (no ``values`` when it
        has none of its own: the controller extracts them)."""
        entry: dict[str, Any] = {
            "name": self._name(),
            "provider": self.provider,
            "path": self._path,
            "env_vars": self._env_vars,
        }
        if self._values is not None:
            entry["values"] = self._values._v
        return entry

    def _extract(self) -> dict[str, Any]:
        doc = _run_json(
            ["secret", "show", "--secret-json", "-", "--json", "--reveal"],
            stdin=_dumps(self._entry()),
        )
        self._found = {"path": doc.get("path"), "env_vars": doc.get("env_vars")}
        shown: dict[str, Any] = doc
        return shown

    def _location(self) -> dict[str, Any]:
        if self._found is None:
            self._extract()
        assert self._found is not None
        return self._found

    def _keeps_env_only(self) -> bool:
        """Whether ``write()`` sets variables of this process (no file)."""
        if self._path is not None:
            return False
        info = _provider(self.provider) if self.provider else None
        if info is None:
            return bool(self._env_vars)
        return info["default_path"] is None and info["id"] != "ssh"

    def _env_map(self) -> dict[str, str]:
        if self._env_vars:
            return dict(self._env_vars)
        found = self._location()["env_vars"] if self._lazy() else None
        if found:
            return dict(found)
        info = _provider(self.provider) if self.provider else None
        return dict(info["env_vars"]) if info else {}

    # -- what you do with it ---------------------------------------------

    def save(self, name: str | None = None) -> Secret:
        """Save to ``~/.rh/secrets/NAME.json`` (0600, replacing a secret of that
        name); also to the remote store when ``login()`` configured one."""
        if name is not None:
            self.name = name
        name = self._name()
        args = ["secret", "create", name, "--force", "--json"]
        if self.provider is not None:
            args += ["--provider", self.provider]
        if self._path is not None:
            args += ["--path", self._path]
        for key, var in (self._env_vars or {}).items():
            args += ["--env-var", f"{key}={var}"]
        stdin = None
        if self._values is not None:
            args += ["--values-json", "-"]
            stdin = _dumps(self._values._v)
        _run_json(args, stdin=stdin)
        if _vault_configured():
            _run_json(["vault", "push", name, "--json"])
        return self

    def delete(self) -> None:
        """Delete the saved copy (``~/.rh/secrets/NAME.json``); the credential
        files are left alone."""
        _run(["secret", "delete", self._name()])

    def write(self, path: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Secret:
        """Put the values where their provider keeps them on this machine: merged
        into its file (atomic, 0600; a differing value raises unless
        ``overwrite``), or, for a provider kept in environment variables
        (``openai``, ``anthropic``, ...), set in ``os.environ`` of this process.
        Returns the secret, its ``path`` set to the file written."""
        if path is None and self._keeps_env_only():
            values = self.values
            for key, var in self._env_map().items():
                if key in values:
                    value = values[key]
                    os.environ[var] = value if isinstance(value, str) else _dumps(value)
            return self
        args = ["secret", "write", "--secret-json", "-", "--json"]
        if path is not None:
            args += ["--path", os.fspath(path)]
        if overwrite:
            args.append("--overwrite")
        doc = _run_json(args, stdin=_dumps(self._entry()))
        files = doc.get("files") or []
        if files and (path is not None or self._path is None):
            self._path = files[0]["path"]
        return self

    def to(
        self,
        system: ClusterRef,
        env: EnvRef | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Secret:
        """Send to every node of ``system``: a file secret into its file (or
        ``path``, relative to the node user's home), an env-var secret into the
        process of ``env`` (default ``base_env``). With ``env``, the secret's
        variables go to that env. Raises :class:`PartialFailureError` when some
        nodes failed."""
        name = _cluster_name(system)
        if isinstance(env, Env):
            env._push(name)
        args = ["send", "--secret-json", "-", "--cluster", name, "--json"]
        if env is not None:
            args += ["--env", _env_name(env)]
        if path is not None:
            args += ["--path", os.fspath(path)]
        _run_json(args, stdin=_dumps(self._entry()))
        return self

    # -- the secrets of this machine ---------------------------------------

    @classmethod
    def from_name(cls, name: str) -> Secret:
        """The saved secret ``name`` (``~/.rh/secrets``), else the detected one."""
        return _from_entry(_run_json(["secret", "show", name, "--json", "--reveal"]), True)

    @staticmethod
    def builtin_providers(as_str: bool = False) -> list[Any]:
        """The builtin provider ids (``as_str=True``), or their descriptions:
        ``id``, ``default_path``, ``env_vars``, ``value_keys``."""
        rows = _providers()
        if as_str:
            return [p["id"] for p in rows]
        return [dict(p) for p in rows]

    @staticmethod
    def extract_provider_secrets(names: Iterable[str] | None = None) -> dict[str, ProviderSecret]:
        """The provider secrets configured on this machine (default files,
        environment variables, ``~/.ssh`` key pairs), by name. Their values are
        read when used."""
        args = ["secret", "detect", "--json"]
        for provider in names or ():
            args += ["--provider", provider]
        doc = _run_json(args)
        return {name: _from_entry(entry, False) for name, entry in doc.items()}  # type: ignore[misc]

    @staticmethod
    def vault_secrets(names: Iterable[str] | None = None) -> list[str]:
        """The names of the secrets in the remote store (``login()`` first)."""
        listed = [s["name"] for s in _run_json(["vault", "list", "--json"])["secrets"]]
        if names is None:
            return listed
        wanted = set(names)
        return [n for n in listed if n in wanted]


class ProviderSecret(Secret):
    """A secret of a provider (``aws``, ``openai``, ``ssh``, ...): built from
    values, a file (``path``), environment variables (``env_vars``), or, with
    none of them, read from the provider's defaults when used."""

    def __init__(
        self,
        name: str | None = None,
        provider: str | None = None,
        values: Mapping[str, Any] | None = None,
        path: str | os.PathLike[str] | None = None,
        env_vars: Mapping[str, str] | None = None,
    ):
        super().__init__(name=name, values=values, provider=provider, path=path, env_vars=env_vars)


def _from_entry(entry: Mapping[str, Any], with_values: bool) -> Secret:
    """A secret from a ``secret show|detect --json`` entry."""
    cls = ProviderSecret if entry.get("provider") else Secret
    obj = cls.__new__(cls)
    Secret.__init__(
        obj,
        name=entry["name"],
        values=entry.get("values") if with_values else None,
        provider=entry.get("provider"),
        path=entry.get("path"),
        env_vars=entry.get("env_vars"),
    )
    return obj


def secret(
    name: str | None = None,
    values: Mapping[str, Any] | None = None,
    provider: str | None = None,
) -> Secret:
    """``rh.secret(name=, values=)`` builds a secret; ``rh.secret("name")`` loads
    a saved one; with ``provider`` it is :func:`provider_secret`."""
    if provider is not None:
        return provider_secret(provider=provider, name=name, values=values)
    if values is None:
        if name is None:
            raise UsageError("give a name to load, or values", 2)
        return Secret.from_name(name)
    return Secret(name=name, values=values)


def provider_secret(
    provider: str | None = None,
    name: str | None = None,
    values: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Secret:
    """A provider secret. ``rh.provider_secret("aws")``: the provider's defaults
    (file, then env vars), read when used; with ``values``, ``path`` or
    ``env_vars``: from those. A first argument that is not a builtin provider,
    alone, loads the saved secret of that name (``rh.provider_secret("my_key")``)."""
    given = values is not None or path is not None or env_vars is not None
    if provider is None:
        if name is None:
            raise UsageError("give a provider or the name of a saved secret", 2)
        if not given:
            return Secret.from_name(name)
        raise UsageError(f"secret {name!r}: give its provider (provider=...)", 2)
    if not given and _provider(provider) is None:
        return Secret.from_name(provider)
    return ProviderSecret(name=name or provider, provider=provider, values=values, path=path, env_vars=env_vars)


class Env:
    """A named process on each node whose environment holds secrets
    (``rh.env``; ``base_env`` when unnamed). Used as ``env=`` it brings its
    secrets: file secrets into their files, the others' variables into it."""

    def __init__(self, name: str | None = None, secrets: Sequence[SecretRef] | None = None):
        if name is not None and not isinstance(name, str):
            raise UsageError("rh_secrets.env takes name= and secrets= (requirements are not managed here)", 2)
        self.name = name or DEFAULT_ENV
        self.secrets: list[SecretRef] = list(secrets or [])

    def to(self, system: ClusterRef) -> Env:
        """Push this env's secrets to every node of ``system``."""
        self._push(_cluster_name(system))
        return self

    def _push(self, cluster_name: str) -> None:
        if self.secrets:
            Cluster(cluster_name).sync_secrets(self.secrets, env=self.name)

    def __repr__(self) -> str:
        names = [s if isinstance(s, str) else s.name for s in self.secrets]
        return f"<Env {self.name!r} secrets={names!r}>"


def env(name: str | None = None, secrets: Sequence[SecretRef] | None = None) -> Env:
    """An :class:`Env` (``base_env`` when unnamed) carrying ``secrets``."""
    return Env(name=name, secrets=secrets)


class RunResult:
    """What a command printed on one node (``Cluster.run``)."""

    __slots__ = ("node", "exit_code", "stdout", "stderr", "timed_out")

    def __init__(self, node: str, exit_code: int, stdout: str, stderr: str, timed_out: bool):
        self.node = node
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out

    def __repr__(self) -> str:
        return f"<RunResult node={self.node!r} exit_code={self.exit_code}>"


class Cluster:
    """A cluster added with ``controller cluster add NAME --host ...``, or
    ``local`` (the agent on this machine)."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise UsageError("a cluster is named by a non-empty string", 2)
        self.name = name

    def __repr__(self) -> str:
        return f"<Cluster {self.name!r}>"

    def sync_secrets(
        self,
        providers: Sequence[SecretRef] | SecretRef | None = None,
        env: EnvRef | None = None,
    ) -> None:
        """Push secrets to every node in one request per node: names (saved
        secrets or provider ids) and secret objects; all secrets of this
        machine when ``providers`` is None. Env-var secrets go to ``env``
        (default ``base_env``). Raises :class:`PartialFailureError` when some
        nodes failed."""
        args = ["sync", "--cluster", self.name, "--json"]
        if isinstance(env, Env):
            env._push(self.name)
        if env is not None:
            args += ["--env", _env_name(env)]
        stdin = None
        if providers is not None:
            items = [providers] if isinstance(providers, (str, Secret)) else list(providers)
            if not items:
                return None
            objects = [s for s in items if isinstance(s, Secret)]
            for item in items:
                if isinstance(item, str):
                    args += ["--secret", item]
                elif not isinstance(item, Secret):
                    raise UsageError(f"secrets are names or Secret objects, not {type(item).__name__}", 2)
            if objects:
                args += ["--secret-json", "-"]
                stdin = _dumps([s._entry() for s in objects])
        _run_json(args, stdin=stdin)
        return None

    def run(
        self,
        cmd: str | Sequence[str],
        env: EnvRef | None = None,
        node: str | None = None,
        timeout: int | None = None,
    ) -> list[RunResult]:
        """Run ``cmd`` (a shell string, or an argv list) inside the process of
        ``env`` (default ``base_env``; an :class:`Env` brings its secrets first)
        on each node, or on ``node``; each node's exit code and output."""
        import json

        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else [os.fspath(a) for a in cmd]
        if isinstance(env, Env):
            env._push(self.name)
        args = ["run", "--cluster", self.name, "--json"]
        if env is not None:
            args += ["--env", _env_name(env)]
        if node is not None:
            args += ["--node", node]
        if timeout is not None:
            args += ["--command-timeout", str(int(timeout))]
        code, out, err = _run([*args, "--", *argv], ok=range(256))
        try:
            nodes = json.loads(out)["nodes"]
        except (ValueError, KeyError, TypeError):
            raise _error(code, err, out) from None
        failed = [n for n in nodes if n.get("error")]
        if failed:
            message = "; ".join(n["error"] for n in failed)
            if len(failed) == len(nodes):
                raise SecretsError(message, 1, nodes)
            raise PartialFailureError(message, 3, nodes)
        return [
            RunResult(n["node"], n.get("exit_code", -1), n["stdout"], n["stderr"], n.get("timed_out", False))
            for n in nodes
        ]


def cluster(name: str) -> Cluster:
    """The cluster ``name`` (``controller cluster add``), or ``"local"``."""
    return Cluster(name)


def ondemand_cluster(name: str) -> Cluster:
    """As :func:`cluster`: Runhouse launches on-demand clusters on a cloud;
    here the name is a cluster added with ``controller cluster add``."""
    return Cluster(name)


def _name_of(obj: Any, kind: type[Cluster] | type[Env], what: str) -> str:
    """The name of a Cluster or Env given as the object or its name."""
    if isinstance(obj, kind):
        return obj.name
    if isinstance(obj, str) and obj:
        return obj
    raise UsageError(f"{what} is a {kind.__name__} or its name, not {type(obj).__name__}", 2)


def _cluster_name(system: ClusterRef) -> str:
    return _name_of(system, Cluster, "a cluster")


def _env_name(env: EnvRef) -> str:
    return _name_of(env, Env, "an env")


def login(
    token: str | None = None,
    upload_secrets: bool = False,
    download_secrets: bool = False,
    url: str | Sequence[str] | None = None,
) -> None:
    """Connect to the remote store (Vault KV v2 / OpenBao) at ``url`` (default
    ``$VAULT_ADDR``) with ``token`` (default ``$VAULT_TOKEN``, else the saved
    one); ``upload_secrets`` pushes every secret of this machine,
    ``download_secrets`` pulls every stored one and writes its files."""
    args = ["login", "--json"]
    for u in [url] if isinstance(url, str) else list(url or []):
        args += ["--url", u]
    if upload_secrets:
        args.append("--upload")
    if download_secrets:
        args.append("--download")
    _run_json(args, env={"VAULT_TOKEN": token} if token else None)


def logout(yes: bool = False) -> None:
    """Forget the remote store and, secret by secret, delete local credentials.
    Asks on a terminal; ``yes=True`` answers yes to everything; without a
    terminal and without ``yes`` nothing is deleted (as ``controller logout``)."""
    import sys

    if not yes and sys.stdin is not None and sys.stdin.isatty():
        import subprocess

        from ._bin import find_controller_bin
        from ._cli import child_env

        # The questions need the terminal, so the environment cannot come
        # through stdin: variables-only secrets are not listed then.
        code = subprocess.run([find_controller_bin(), "logout"], env=child_env()).returncode
        if code != 0:
            raise SecretsError(f"controller logout exited with status {code}", code)
        return
    _, out, err = _run(["logout", *(["--yes"] if yes else [])])
    sys.stdout.write(out)
    sys.stderr.write(err)
