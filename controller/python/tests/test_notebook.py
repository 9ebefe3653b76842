"""``guide_flow.ipynb`` (the guide's end-to-end flow with ``rh_secrets``)
executed headless with nbclient, in a kernel of this interpreter, on a temp
HOME and the ``local`` cluster. A failing cell fails the test; the cells'
own asserts check values and the files on the node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).with_name("guide_flow.ipynb")


def test_the_guide_notebook_runs_headless(home: Path, tmp_path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    aws = home / ".aws" / "credentials"
    aws.parent.mkdir(mode=0o700)
    aws.write_text("[default]\naws_access_key_id = ABCD_KEY\naws_secret_access_key = 1234_KEY\n")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter"), "IPYTHONDIR": str(tmp_path / "ipython")}
    client.execute(env=env)  # raises CellExecutionError naming the failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell did not run"
    text = [
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in code
        for o in c.outputs
    ]
    assert "extracted path: ~/.aws/credentials\n" in text
    assert any("api_key = lambda_key" in t for t in text)
    assert "the guide's flow ran\n" in text
    assert all("secret_val" not in t for t in text), "a repr showed a value"
    assert (home / ".rh" / "secrets" / "lambda_key.json").is_file()
