"""``python -m rh_secrets ARGS...`` runs ``controller ARGS...`` (the CLI the
wheel carries), replacing this process like ``python -m uv`` does."""

from __future__ import annotations

import os
import sys

from ._bin import find_controller_bin


def main() -> None:
    controller = os.fsdecode(find_controller_bin())
    if sys.platform == "win32":  # pragma: no cover - no Windows wheel is built
        import subprocess

        sys.exit(subprocess.run([controller, *sys.argv[1:]]).returncode)
    os.execv(controller, [controller, *sys.argv[1:]])


if __name__ == "__main__":
    main()
