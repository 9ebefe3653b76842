"""The API's own promises, against the real binary: no value in a secret's
``repr``/``str``/``vars`` or in an exception; errors mapped to
:class:`UsageError` (exit 2), :class:`NotFoundError`,
:class:`PartialFailureError` (exit 3, with the per-node rows); files written
private; ``python -m rh_secrets`` runs the CLI; the binary found is the one
the wheel installed next to this interpreter.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import rh_secrets as rh
from rh_secrets import _bin, _cli

VALUE = "rhpy-api-marker-value-0001"
OTHER = "rhpy-api-marker-other-0002"


def no_value(*texts: str) -> None:
    for text in texts:
        for marker in (VALUE, OTHER):
            assert marker not in text, text


def test_repr_str_and_vars_never_show_values(home: Path):
    built = rh.provider_secret("lambda", values={"api_key": VALUE})
    base = rh.secret(name="mine", values={"key": VALUE, "nested": {"deep": OTHER}})
    base.save()
    loaded = rh.secret("mine")
    assert loaded.values == {"key": VALUE, "nested": {"deep": OTHER}}
    for s in (built, base, loaded):
        no_value(repr(s), str(s), f"{s}", repr(vars(s)), str([s]), str({"s": s}))
        assert "keys=" in repr(s)
    assert repr(loaded) == "<Secret 'mine' keys=['key', 'nested']>"
    # `.values` is a copy: changing it changes nothing saved or held.
    loaded.values["nested"]["deep"] = "changed"
    assert loaded.values["nested"]["deep"] == OTHER


def test_saved_files_are_private_and_delete_forgets(home: Path):
    rh.secret(name="tok", values={"key": VALUE}).save()
    saved = home / ".rh" / "secrets" / "tok.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["values"] == {"key": VALUE}
    rh.secret("tok").delete()
    assert not saved.exists()
    with pytest.raises(rh.NotFoundError) as e:
        rh.secret("tok")
    assert isinstance(e.value, LookupError) and e.value.exit_code == 1
    assert "tok" in str(e.value)


def test_usage_and_not_found_errors(home: Path):
    with pytest.raises(rh.UsageError) as e:
        rh.secret(name="bad/name", values={"k": VALUE}).save()
    assert e.value.exit_code == 2 and isinstance(e.value, ValueError)
    no_value(str(e.value), repr(e.value))
    with pytest.raises(rh.NotFoundError) as nf:
        rh.cluster("nowhere").sync_secrets(["aws"])
    assert nf.value.exit_code == 2 and "nowhere" in str(nf.value)
    with pytest.raises(rh.NotFoundError) as nf:
        rh.provider_secret("aws").values  # no ~/.aws/credentials, no AWS_* vars
    assert "no aws credentials found" in str(nf.value)
    with pytest.raises(rh.UsageError):
        rh.secret(name="x", values={"k": b"bytes are not JSON"}).to("local")


def test_write_merges_into_the_file_and_refuses_a_differing_value(home: Path):
    creds = home / ".aws" / "credentials"
    creds.parent.mkdir(mode=0o700)
    creds.write_text(f"[default]\naws_access_key_id = OLDKEY\naws_secret_access_key = {OTHER}\n\n[other]\nregion = x\n")
    s = rh.provider_secret("aws", values={"access_key": "NEWKEY", "secret_key": VALUE})
    with pytest.raises(rh.SecretsError) as e:
        s.write()
    no_value(str(e.value))
    assert "conflict" in str(e.value) or "other values" in str(e.value), str(e.value)
    assert OTHER in creds.read_text()
    assert s.write(overwrite=True) is s and s.path == "~/.aws/credentials"
    text = creds.read_text()
    assert f"aws_secret_access_key = {VALUE}" in text and "[other]\nregion = x" in text
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    # An env-only provider's write() sets this process's variable.
    rh.provider_secret("cohere", values={"api_key": VALUE}).write()
    assert os.environ["COHERE_API_KEY"] == VALUE


def test_a_partial_failure_carries_the_rows_of_every_node(home: Path, sshd_node):
    from conftest import free_port

    dead = f"127.0.0.1:{free_port()}"
    sshd_node.add_cluster("half", more_hosts=(dead,))
    secret = rh.provider_secret("lambda", values={"api_key": VALUE})
    with pytest.raises(rh.PartialFailureError) as e:
        secret.to("half")
    rows = {row["node"]: row for row in e.value.nodes}
    assert e.value.exit_code == 3 and set(rows) == {f"127.0.0.1:{sshd_node.port}", dead}
    assert rows[f"127.0.0.1:{sshd_node.port}"]["ok"] and not rows[dead]["ok"]
    assert rows[f"127.0.0.1:{sshd_node.port}"]["results"][0]["status"] == "written"
    no_value(str(e.value), repr(e.value.nodes))
    assert (sshd_node.home / ".lambda_cloud" / "lambda_keys").read_text() == f"api_key = {VALUE}\n"
    with pytest.raises(rh.PartialFailureError) as e:
        rh.cluster("half").run("echo hi")
    ok = [n for n in e.value.nodes if not n.get("error")]
    assert len(ok) == 1 and ok[0]["stdout"] == "hi\n"


def test_run_returns_each_nodes_output_and_exit_code(home: Path):
    (result,) = rh.cluster("local").run("echo out; echo err >&2; exit 7")
    assert (result.node, result.exit_code, result.stdout, result.stderr) == ("local", 7, "out\n", "err\n")
    (result,) = rh.cluster("local").run(["printf", "%s", "a b"])
    assert result.stdout == "a b"


def test_python_m_rh_secrets_runs_the_cli(home: Path):
    out = subprocess.run([sys.executable, "-m", "rh_secrets", "providers", "--json"],
                         capture_output=True, text=True, check=True)
    ids = [p["id"] for p in json.loads(out.stdout)]
    assert ids == rh.Secret.builtin_providers(as_str=True) and len(ids) == 16
    usage = subprocess.run([sys.executable, "-m", "rh_secrets", "no-such-command"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage: controller" in usage.stderr


@pytest.mark.skipif("RH_CONTROLLER_BIN" in os.environ, reason="RH_CONTROLLER_BIN names the binary")
def test_the_binary_is_the_one_the_wheel_installed_next_to_this_interpreter():
    found = _bin.find_controller_bin()
    assert Path(found) == Path(sysconfig.get_path("scripts")) / "controller", found
    assert Path(rh.__file__).is_relative_to(Path(sysconfig.get_path("purelib"))), rh.__file__


def test_an_explicit_binary_must_be_executable(monkeypatch, tmp_path: Path):
    not_exe = tmp_path / "controller"
    not_exe.write_text("")
    monkeypatch.setenv("RH_CONTROLLER_BIN", str(not_exe))
    with pytest.raises(_bin.ControllerNotFound):
        _bin.find_controller_bin()


def test_the_child_environment_is_the_allow_list(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", VALUE)
    monkeypatch.setenv("VAULT_TOKEN", OTHER)
    monkeypatch.setenv("RH_SSH_CONFIG", "/x")
    env = _cli.child_env()
    assert "OPENAI_API_KEY" not in env and "VAULT_TOKEN" not in env and env["RH_SSH_CONFIG"] == "/x"


def test_login_with_a_rejected_token_raises_without_the_token(home: Path, bao):
    with pytest.raises(rh.SecretsError) as e:
        rh.login(token=VALUE, url=bao.url)
    no_value(str(e.value), repr(e.value))
    assert "token" in str(e.value) and not (home / ".rh" / "vault-token").exists()
    rh.login(token="rh-py-test-root-token-7d2a", url=bao.url, upload_secrets=False)
    assert rh.Secret.vault_secrets() == []
    rh.secret(name="kept", values={"k": VALUE}).save()  # logged in: saved here and in the store
    assert rh.Secret.vault_secrets() == ["kept"]
    assert bao.read(f"secret/data/rh/{os.environ['USER']}/kept")["data"]["data"] == {"k": VALUE}
