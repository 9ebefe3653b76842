"""Finding the ``controller`` binary this package runs.

The wheel carries it as a script (maturin's ``bindings = "bin"``), so pip puts
it in the scripts directory of the environment it installs into, the way
``uv`` and ``ruff`` ship theirs. Looked up, in order: ``$RH_CONTROLLER_BIN``,
the scripts directory of the running interpreter, of its base prefix (a venv
over an installation), of the user scheme (``pip install --user``), the
``bin`` directory beside the package (``pip install --target``), then
``PATH``. Never runs anything.
"""

from __future__ import annotations

import os
import sys

#: The binary's name, as Cargo names it.
NAME = "controller"


class ControllerNotFound(FileNotFoundError):
    """No ``controller`` binary was found in any of the places looked at."""


def _user_scheme() -> str:
    import sysconfig

    if sys.version_info >= (3, 10):
        return sysconfig.get_preferred_scheme("user")
    if os.name == "nt":
        return "nt_user"
    if sys.platform == "darwin" and getattr(sys, "_framework", None):
        return "osx_framework_user"
    return "posix_user"


def candidates() -> list[str]:
    """The places looked at, in order (without ``PATH``)."""
    import sysconfig

    exe = NAME + (sysconfig.get_config_var("EXE") or "")
    dirs = [
        sysconfig.get_path("scripts"),
        sysconfig.get_path("scripts", vars={"base": sys.base_prefix}),
    ]
    try:
        dirs.append(sysconfig.get_path("scripts", scheme=_user_scheme()))
    except KeyError:  # a Python built without a user scheme
        pass
    # `pip install --target DIR` puts the package in DIR and scripts in DIR/bin.
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin"))
    seen: list[str] = []
    for d in dirs:
        path = os.path.join(d, exe)
        if d and path not in seen:
            seen.append(path)
    return seen


def _runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


_FOUND: dict[str, str] = {}


def find_controller_bin() -> str:
    """The path of the ``controller`` binary (see the module's docstring),
    looked up once per process (per ``$RH_CONTROLLER_BIN``)."""
    key = os.environ.get("RH_CONTROLLER_BIN", "")
    if key not in _FOUND:
        _FOUND[key] = _find()
    return _FOUND[key]


def _find() -> str:
    explicit = os.environ.get("RH_CONTROLLER_BIN")
    if explicit:
        if not _runnable(explicit):
            raise ControllerNotFound(f"RH_CONTROLLER_BIN={explicit} is not an executable file")
        return explicit
    looked = candidates()
    for path in looked:
        if _runnable(path):
            return path
    import shutil

    on_path = shutil.which(NAME)
    if on_path:
        return on_path
    raise ControllerNotFound(
        f"no `{NAME}` binary in {', '.join(looked)} or on PATH: "
        "install the rh-secrets wheel for this platform, or set RH_CONTROLLER_BIN"
    )
