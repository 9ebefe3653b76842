"""Every code cell of the Runhouse secrets guide runs as written (only the
import line changed, see ``guide.py``), in order, in one namespace, against
the ``local`` cluster and against a real sshd node, with a real OpenBao dev
server as the remote store. What each cell prints must appear in the outputs
the guide shows after it, and a value it shows as a Python literal must be
the one the guide shows (a list: the guide's items, in order, among ours:
this package knows two more providers, and the store holds every secret the
run uploaded). Then the effects are checked on disk: files and modes on the
node and here, the saved secrets, the store's contents.

The files the guide shows with ``!cat`` are created from what it shows; the
credentials its author had without showing them (gcp, github, huggingface,
``~/.ssh/id_rsa``) come from common's fixtures. The local variant names the
cluster ``local`` in the guide's ``rh.ondemand_cluster("example-cluster")``
(the one cell changed there); the sshd variant adds ``example-cluster``
for the node.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import guide
from conftest import REPO, require

FIXTURES = REPO / "common" / "tests" / "data" / "providers"
UNSHOWN = {
    ".config/gcloud/application_default_credentials.json": FIXTURES / "gcp" / "source",
    ".config/gh/hosts.yml": FIXTURES / "github" / "source",
    ".cache/huggingface/token": FIXTURES / "huggingface" / "source",
    ".ssh/id_rsa": FIXTURES / "ssh" / "source",
    ".ssh/id_rsa.pub": FIXTURES / "ssh" / "source.pub",
}
CLUSTER_CELL = 'rh.ondemand_cluster("example-cluster")'


def guide_cells() -> list[guide.Cell]:
    path = guide.guide_path()
    require(
        f"the guide ../shared/seed/{guide.GUIDE_NAME} beside the repository (or $RH_GUIDE_RST)",
        path is not None and path.is_file(),
    )
    assert path is not None
    return guide.cells(path.read_text())


def put(home: Path, rel: str, text: str) -> None:
    path = home / rel
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(0o600)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def is_subsequence(wanted: list, got: list) -> bool:
    it = iter(got)
    return all(any(w == g for g in it) for w in wanted)


def check_value(cell: guide.Cell, value, has_value: bool) -> bool:
    """Compare a shown value with the guide's; whether a comparison was made."""
    expected = guide.expected_value(cell)
    if expected is None:
        return False
    assert has_value, f"{cell!r} shows {expected!r} in the guide and nothing here"
    if isinstance(expected, list):
        assert isinstance(value, list) and is_subsequence(expected, value), f"{cell!r}: {value!r}"
    else:
        assert value == expected, f"{cell!r}: got {value!r}, the guide shows {expected!r}"
    return True


@pytest.mark.parametrize("variant", ["local", "sshd"])
def test_the_guide_runs_as_written(variant, home, tmp_path, request, monkeypatch, bao):
    cells = guide_cells()
    assert cells[0].source.strip() == guide.ORIGINAL_IMPORT, "the guide's first cell changed"
    for rel, text in guide.files_shown(cells).items():
        put(home, rel[2:], text)
    for rel, src in UNSHOWN.items():
        put(home, rel, src.read_text())
    if variant == "sshd":
        node = request.getfixturevalue("sshd_node")
        node.add_cluster("example-cluster")
        node_home = node.home
    else:
        for c in cells:
            c.source = c.source.replace(CLUSTER_CELL, 'rh.ondemand_cluster("local")')
        node_home = home
    monkeypatch.setenv("VAULT_ADDR", bao.url)
    monkeypatch.setenv("VAULT_TOKEN", "rh-py-test-root-token-7d2a")

    runner = guide.Runner(tmp_path / "shim")
    compared = printed_lines = 0
    for cell in cells:
        printed, value, has_value = runner.run(cell)
        shown = guide.shown_lines(cell)
        for line in printed.splitlines():
            if line.strip() and cell.outputs:
                assert line.rstrip() in shown, f"{cell!r} printed {line!r}; the guide shows {cell.outputs}"
                printed_lines += 1
        compared += check_value(cell, value, has_value)
    # Not vacuous: the guide (32 cells) shows 11 values as literals and 6
    # printed lines besides its `!cat` files; every one was compared.
    assert len(cells) >= 30 and compared >= 10 and printed_lines >= 6, (len(cells), compared, printed_lines)

    # Effects on the node: files merged there, private.
    lam = node_home / ".lambda_cloud" / "lambda_keys"
    assert lam.read_text() == "api_key = lambda_key\n"
    assert mode(lam) == 0o600 and mode(lam.parent) == 0o700
    aws = (node_home / ".aws" / "credentials").read_text()
    assert "aws_access_key_id = ABCD_KEY\n" in aws and mode(node_home / ".aws" / "credentials") == 0o600
    gcp = node_home / ".config/gcloud/application_default_credentials.json"
    assert gcp.read_text() == UNSHOWN[".config/gcloud/application_default_credentials.json"].read_text()
    # Here: `.write()` merged lambda's file; anthropic's `.write()` set this
    # process's variable; saved secrets are private.
    assert (home / ".lambda_cloud" / "lambda_keys").read_text() == "api_key = lambda_key\n"
    assert os.environ["ANTHROPIC_API_KEY"] == "ahthropic_key"
    for name in ("my_secret", "lambda_key", "gcp_secret", "aws"):
        assert mode(home / ".rh" / "secrets" / f"{name}.json") == 0o600, name
    # The store: gcp_secret saved to it by `.save()` after the login, the
    # custom-path aws secret saved over the uploaded one.
    user = os.environ["USER"]
    gcp_saved = bao.read(f"secret/data/rh/{user}/gcp_secret")
    assert gcp_saved is not None and gcp_saved["data"]["data"]["client_id"], gcp_saved
    aws_saved = bao.read(f"secret/data/rh/{user}/aws")["data"]["data"]
    assert aws_saved == {"access_key": "ABCD_KEY_CUSTOM", "secret_key": "1234_KEY_CUSTOM"}
