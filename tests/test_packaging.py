"""ctxkit installed from its wheel, as a user outside the repository gets it: the wheel carries the notebooks,
parameter files, templates and model cards, and `ctxkit run e0_smoke` works from an empty folder, as does a
workspace made by `ctxkit init`."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


def test_package_list_is_every_package_on_disk():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ctxkit").rglob("__init__.py")}
    assert {p for p in listed if not p.startswith("ctxkit.resources.")} == on_disk


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """The built wheel in a fresh virtual environment. Its dependencies (vLLM and the rest) come from this
    environment's site-packages through a .pth line, so nothing is downloaded; ctxkit itself only from the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp / "dist").glob("ctxkit-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "ctxkit-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # ... and their data files where an install would put them (nbconvert's base templates), except kernel specs:
    # the wheel's ctxkit must register its own kernel
    (venv / "share" / "jupyter").mkdir(parents=True)
    (venv / "share" / "jupyter" / "nbconvert").symlink_to(Path(sys.prefix) / "share" / "jupyter" / "nbconvert")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return venv, wheel


def test_wheel_carries_what_ctxkit_run_needs(wheel_venv):
    _, wheel = wheel_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ctxkit/resources/notebooks/e0_smoke.ipynb", "ctxkit/resources/params/e0_smoke.yaml",
                   "ctxkit/resources/params/profiles/cpu-tiny.yaml", "ctxkit/resources/templates/ctxkit/index.html.j2",
                   "ctxkit/resources/templates/compare/report.html.j2", "ctxkit/models/tiny-llama/config.json",
                   "ctxkit/models/tiny-llama/tokenizer.json"):
        assert needed in names, needed


def user_env(venv: Path) -> dict[str, str]:
    """A shell as a user has it after activating the venv: none of the test session's ctxkit variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXKIT_") and k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.mark.vllm
@pytest.mark.slow
def test_wheel_install_runs_e0_from_an_empty_folder(wheel_venv, vllm_server, tmp_path):
    venv, _ = wheel_venv
    where = subprocess.run([venv / "bin" / "python", "-c", "import ctxkit; print(ctxkit.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=user_env(venv))
    assert str(venv) in where.stdout, where                       # the wheel's copy, not the checkout's
    work = tmp_path / "empty"
    work.mkdir()
    result = subprocess.run([venv / "bin" / "ctxkit", "run", "e0_smoke", "--set", "backend=endpoint",
                             "--set", f"endpoint_url={vllm_server.base_url}", "--set", "prompt_lens=[16, 64]"],
                            capture_output=True, text=True, cwd=work, env=user_env(venv), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.parent == work / "runs" / "e0_smoke"                 # runs go under the current folder
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert (run / "report.html").is_file() and (run / "notebook.ipynb").is_file(), result.stderr[-2000:]
    kernel = json.loads((venv / "share/jupyter/kernels/ctxkit/kernel.json").read_text())
    assert kernel["argv"][0].startswith(str(venv))                  # the venv registered its own kernel


@pytest.mark.vllm
@pytest.mark.slow
def test_a_workspace_from_ctxkit_init(wheel_venv, vllm_server, tmp_path):
    venv, _ = wheel_venv
    env = user_env(venv)
    made = subprocess.run([venv / "bin" / "ctxkit", "init", str(tmp_path / "ws")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    ws = tmp_path / "ws"
    for name in ("notebooks/e0_smoke.ipynb", "notebooks/e0_smoke.py", "params/profiles/cpu-tiny.yaml",
                 "templates/ctxkit/index.html.j2"):
        assert (ws / name).is_file(), name
    # the workspace's own parameter file is what a run there uses
    (ws / "params" / "e0_smoke.yaml").write_text("prompt_lens: [16, 32]\nmax_tokens: 4\n")
    result = subprocess.run([venv / "bin" / "ctxkit", "run", "e0_smoke", "--set", "backend=endpoint",
                             "--set", f"endpoint_url={vllm_server.base_url}"],
                            capture_output=True, text=True, cwd=ws / "notebooks", env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.parent == ws / "runs" / "e0_smoke"
    assert "prompt_lens:\n- 16\n- 32\n" in (run / "params.yaml").read_text()
    again = subprocess.run([venv / "bin" / "ctxkit", "init", str(ws)], capture_output=True, text=True, env=env,
                           timeout=120)
    assert again.returncode == 2 and "already has" in again.stderr  # never over an existing workspace
