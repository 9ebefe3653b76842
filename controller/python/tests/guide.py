"""The Runhouse secrets guide (``shared/seed/runhouse-secrets-guide.rst``),
read at test time: its code cells in order, each with the outputs the guide
shows after it, and a runner that executes them the way a notebook does (one
namespace, ``!`` lines through a shell, the last expression's value shown).

Nothing of the guide is copied here: the cells come from the file. What the
runner supplies, and why:
- the import line: ``import runhouse as rh`` becomes ``import rh_secrets as rh,
  rh_secrets as runhouse`` (the guide also calls ``runhouse.login``);
- ``rh.function`` and ``rh.file``, Runhouse's remote function and file
  runtime, which is not part of this package: stand-ins that run the
  function's own code, or read the file, on the node with ``Cluster.run``
  (so ``get_env_var("OPENAI_API_KEY")`` reads the var inside the env's process);
- ``runhouse`` on PATH for the ``! runhouse login`` line: it runs this
  package's CLI (``python -m rh_secrets login``).
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

GUIDE_NAME = "runhouse-secrets-guide.rst"
ORIGINAL_IMPORT = "import runhouse as rh"
IMPORT = "import rh_secrets as rh, rh_secrets as runhouse"


def guide_path() -> Path | None:
    """``$RH_GUIDE_RST``, else ``../shared/seed/`` beside the repository."""
    explicit = os.environ.get("RH_GUIDE_RST")
    if explicit:
        return Path(explicit)
    path = Path(__file__).resolve().parents[3].parent / "shared" / "seed" / GUIDE_NAME
    return path if path.is_file() else None


class Cell:
    def __init__(self, source: str, line: int):
        self.source = source
        self.line = line
        self.outputs: list[str] = []

    @property
    def is_shell(self) -> bool:
        lines = [l for l in self.source.splitlines() if l.strip()]
        return bool(lines) and all(l.lstrip().startswith("!") for l in lines)

    def __repr__(self) -> str:
        return f"<cell at line {self.line}: {self.source.splitlines()[0]!r}>"


def _indented(lines: list[str], i: int) -> tuple[str, int]:
    """The indented block starting at ``lines[i]`` (options skipped), dedented."""
    while i < len(lines) and lines[i].strip().startswith(":"):
        i += 1
    block: list[str] = []
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
        block.append(lines[i][4:])
        i += 1
    while block and not block[-1].strip():
        block.pop()
    while block and not block[0].strip():
        block.pop(0)
    return "\n".join(block), i


def cells(text: str) -> list[Cell]:
    """The ``.. code:: ipython3`` cells, each with the ``parsed-literal``
    outputs that follow it."""
    lines = text.splitlines()
    out: list[Cell] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line == ".. code:: ipython3":
            source, i = _indented(lines, i + 1)
            out.append(Cell(source, i))
            continue
        if line == ".. parsed-literal::" and out:
            literal, i = _indented(lines, i + 1)
            out[-1].outputs.append(literal)
            continue
        i += 1
    return out


def expected_value(cell: Cell):
    """The last output of the cell that is a Python literal (a shown value),
    else ``None``."""
    for text in reversed(cell.outputs):
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            continue
    return None


def shown_lines(cell: Cell) -> set[str]:
    return {l.rstrip() for text in cell.outputs for l in text.splitlines()}


def files_shown(all_cells: list[Cell]) -> dict[str, str]:
    """``!cat PATH`` cells: the file each shows, by ``~/`` path."""
    files = {}
    for c in all_cells:
        m = re.fullmatch(r"!\s*cat\s+(~/\S+)", c.source.strip())
        if m and c.outputs:
            files[m.group(1)] = c.outputs[0] + "\n"
    return files


class Runner:
    """Runs cells in one namespace, as a notebook kernel does."""

    def __init__(self, bin_dir: Path):
        import rh_secrets

        self.rh = rh_secrets
        self.ns: dict = {"__name__": "__guide__"}
        self.functions: dict[str, str] = {}
        # `! runhouse ...` runs this package's CLI.
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "runhouse"
        shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m rh_secrets \"$@\"\n")
        shim.chmod(0o755)
        self.path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"

    def _stand_ins(self):
        runner = self

        def function(fn, system=None, env=None, **_kwargs):
            source = runner.functions[fn.__name__]
            program = (
                f"{source}\nimport json, sys\n"
                f"print(json.dumps({fn.__name__}(*json.loads(sys.argv[1]))))\n"
            )

            def call(*args):
                results = system.run(["python3", "-c", program, json.dumps(args)], env=env)
                assert len(results) == 1 and results[0].exit_code == 0, results[0].stderr
                return json.loads(results[0].stdout)

            return call

        class _File:
            def __init__(self, path, system):
                self.path, self.system = path, system

            def fetch(self, mode="r", deserialize=False):
                rel = self.path[2:] if self.path.startswith("~/") else self.path
                (result,) = self.system.run(["sh", "-c", f'cat "$HOME"/{shlex.quote(rel)}'])
                assert result.exit_code == 0, result.stderr
                return result.stdout

        def file(path=None, system=None, **_kwargs):
            return _File(path, system)

        return function, file

    def run(self, cell: Cell):
        """Execute one cell; return ``(printed_text, shown_value, has_value)``."""
        if cell.is_shell:
            out = io.StringIO()
            for line in cell.source.splitlines():
                if line.strip():
                    done = subprocess.run(
                        ["bash", "-c", line.lstrip()[1:]],
                        capture_output=True,
                        text=True,
                        env={**os.environ, "PATH": self.path},
                    )
                    assert done.returncode == 0, f"{line}: {done.stderr}"
                    out.write(done.stdout)
            return out.getvalue(), None, False
        source = cell.source.replace(ORIGINAL_IMPORT, IMPORT)
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions[node.name] = ast.get_source_segment(source, node) or ""
        function, file = self._stand_ins()
        self.rh.function, self.rh.file = function, file
        value, has_value = None, False
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                body = tree.body
                last = body[-1] if body and isinstance(body[-1], ast.Expr) else None
                if last is not None:
                    body = body[:-1]
                exec(compile(ast.Module(body=body, type_ignores=[]), f"<{cell!r}>", "exec"), self.ns)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), f"<{cell!r}>", "eval"), self.ns)
                    has_value = value is not None
        finally:
            del self.rh.function, self.rh.file
        return out.getvalue(), value, has_value
