"""Simulated-backend runs (explicitly allowed) say so in every artifact; explore_runs.ipynb executes headless
under papermill over real run folders and draws the overlay."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from browser import probe_report
from conftest import ROOT, run_cli

SIM = {"CTXKIT_ALLOW_SIMULATED_BACKEND": "1"}
E2_SIM = ["run", "e2_concurrency", "--set", "backend=simulated", "--set", "concurrency_levels=[1, 4]",
          "--set", "requests_per_point=8"]


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for label in ("sim-a", "sim-b"):   # --runs-dir relative to the current folder, as a user types it
        result = run_cli("--runs-dir", root.name, *E2_SIM, "--label", label, env=SIM, cwd=root.parent)
        assert result.returncode == 0, result.stderr[-3000:]
        paths.append(Path(result.stdout.strip().splitlines()[-1]))
    assert all(p.parent == root / "e2_concurrency" for p in paths)
    return root, paths


def test_simulated_backend_needs_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CTXKIT_ALLOW_SIMULATED_BACKEND"}
    result = subprocess.run([sys.executable, "-m", "ctxkit.cli", "--runs-dir", str(tmp_path), *E2_SIM],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "CTXKIT_ALLOW_SIMULATED_BACKEND=1" in result.stderr
    assert not any(tmp_path.iterdir())


def test_simulated_runs_say_so_everywhere(sim_runs):
    _, paths = sim_runs
    for run in paths:
        meta = json.loads((run / "run_metadata.json").read_text())
        assert meta["backend_mode"] == "simulated"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["servers"][0]["mode"] == "simulated"
        assert summary["servers"][0]["version"]["version"].startswith("simulated")
        html = (run / "report.html").read_text()
        assert 'id="ctxkit-simulated-banner"' in html and "SIMULATED BACKEND" in html
        assert probe_report(run / "report.html")["errors"] == []
    listing = run_cli("--runs-dir", str(sim_runs[0]), "ls")
    assert listing.stdout.count("simulated") >= 2


def test_explore_runs_executes_headless(sim_runs, tmp_path):
    root, paths = sim_runs
    out = tmp_path / "explore.ipynb"
    result = subprocess.run([sys.executable, "-m", "papermill", "notebooks/explore_runs.ipynb", str(out), "-k",
                             "ctxkit", "-p", "runs_dir", str(root), "-p", "experiment", "e2_concurrency",
                             "-p", "label_filter", "sim", "--execution-timeout", "300"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    texts = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "2 run(s) of e2_concurrency" in texts
    images = [o for o in nb.cells[-1].outputs if "image/svg+xml" in o.get("data", {})]
    assert len(images) >= 3                                  # the headline metrics, each overlaid
    widgets = [o for c in nb.cells for o in c.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets                                           # the interactive view was built
    # ... and drew its figures into the Output widget as data, with no widget frontend (nothing captured)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    (output,) = [m["state"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert sum("image/svg+xml" in o["data"] for o in output["outputs"]) >= 3
