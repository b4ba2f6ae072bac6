"""Security: loopback by default, secrets redacted, names that cannot escape runs/, no shell=True."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ctxkit import params as P
from ctxkit.backends import VLLMServer

from conftest import ROOT, run_cli


def test_servers_bind_loopback_by_default():
    assert P.ServerParams().host == "127.0.0.1"
    server = VLLMServer("tiny-llama")
    server.port = 1234
    cmd = server.command()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    from ctxkit.schedulers.router import RouterProcess
    config = {"mode": "aggregated", "model": "tiny-llama", "route_log": "/tmp/routes.jsonl",
              "instances": {"pool": [{"name": "a", "url": "http://127.0.0.1:1"}]}}
    assert RouterProcess(config, log_dir=Path("/tmp")).host == "127.0.0.1"


@pytest.mark.parametrize("label", ["../escape", "a/b", "..", ".hidden", "x" * 70])
def test_labels_cannot_escape_runs(tmp_path, label):
    result = run_cli("--runs-dir", str(tmp_path), "run", "e0_smoke", "--label", label)
    assert result.returncode == 2 and "is not allowed" in result.stderr
    assert not any(tmp_path.iterdir())


def test_no_shell_true_anywhere():
    for path in (ROOT / "ctxkit").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    assert not (kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value), \
                        f"shell=True in {path}:{node.lineno}"
                func = getattr(node.func, "attr", getattr(node.func, "id", ""))
                assert func not in ("system", "popen"), f"os.{func} in {path}:{node.lineno}"
