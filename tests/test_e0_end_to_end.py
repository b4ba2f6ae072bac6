"""E0 end to end through `ctxkit run` and through plain papermill, plus its failure paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def vllm_processes(exclude_pgid: int | None = None) -> list[int]:
    """vLLM servers alive on this machine, other than the shared fixture's."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "vllm.entrypoints.openai.api_server" in cmd and os.getpgid(proc.pid) != exclude_pgid \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def run_groups_alive(run: Path) -> list[int]:
    """Process groups this run started (ctxkit records each in logs/process_groups.txt) that still have a member."""
    from ctxkit.backends.process import group_members
    groups = [int(x) for x in (run / "logs" / "process_groups.txt").read_text().split()]
    return [g for g in groups if group_members(g)]


def run_folder_from(result: subprocess.CompletedProcess) -> Path:
    last = result.stdout.strip().splitlines()[-1]
    path = Path(last)
    assert path.is_dir(), f"last line is not the run folder: {last!r}\n{result.stderr[-3000:]}"
    return path


@pytest.fixture(scope="module")
def e0_run(tmp_path_factory):
    """One `ctxkit run e0_smoke`: two freshly started servers, whose outputs E0 itself compares (its reproducible
    check). A second run of the same config adds nothing to that but three minutes of CI: what would make two runs
    differ is their request set and config, checked below without servers."""
    runs = tmp_path_factory.mktemp("runs")
    return runs, [run_cli("--runs-dir", str(runs), "run", "e0_smoke", "--label", "ci-0")]


def test_e0_run_folder_is_complete(e0_run):
    _, results = e0_run
    for result in results:
        assert result.returncode == 0, result.stderr[-4000:]
        run = run_folder_from(result)
        for name in ("run_metadata.json", "params.yaml", "notebook.ipynb", "summary.json", "report.html",
                     "requests.jsonl", "logs/server-a.log", "logs/server-b.log", "artifacts/e0_latency.svg"):
            assert (run / name).is_file(), name
        assert not (run / "failure.json").exists()
        summary = json.loads((run / "summary.json").read_text())
        checks = summary["checks"]
        for name in ("success", "strict_backend", "all_backends_real_vllm", "reproducible"):
            assert checks[name]["passed"] is True, (name, checks[name])
        ttft = summary["profiling"]["latency"]["ttft_ms"]
        assert ttft["count"] == 16 and {"min", "max", "avg", "p50", "p95"} <= set(ttft)
        assert 0 < ttft["min"] <= ttft["p50"] <= ttft["p95"] <= ttft["max"]
        assert summary["profiling"]["latency"]["tpot_ms"]["count"] == 16
        assert len(summary["payload"]["results"]) == 16
        meta = json.loads((run / "run_metadata.json").read_text())
        assert meta["backend_mode"] == "real" and meta["versions"]["vllm"] and meta["label"].startswith("ci-")
        html = (run / "report.html").read_text()
        assert 'id="ctxkit-header"' in html and "ctxkit-simulated-banner" not in html
        assert "data:image/svg+xml" in html                              # figures inline
        assert "src=\"http" not in html and "href=\"http" not in html     # nothing from the network
        assert "[ctxkit]" in result.stderr                                  # progress on screen
        assert len((run / "logs" / "process_groups.txt").read_text().split()) == 2   # two servers started ...
        assert run_groups_alive(run) == []                                            # ... and both stopped


def test_two_e0_runs_send_the_same_requests_under_the_same_config_hash():
    """Two runs of one config send the same prompts, sampling settings and seeds, and record one config hash: the
    reproducible check inside each run (two fresh servers, equal outputs) then holds across runs."""
    from ctxkit.experiments import e0_smoke
    from ctxkit.params import config_hash, resolve
    a, b = (resolve("e0_smoke") for _ in range(2))           # the defaults `ctxkit run e0_smoke` resolves
    assert e0_smoke.request_set(a) == e0_smoke.request_set(b)
    assert config_hash("e0_smoke", a) == config_hash("e0_smoke", b)
    other = a.model_copy(update={"seed": 1})                  # the seed is what decides them
    assert [r.prompt for r in e0_smoke.request_set(other)] != [r.prompt for r in e0_smoke.request_set(a)]
    assert config_hash("e0_smoke", other) != config_hash("e0_smoke", a)


def test_report_and_ls(e0_run):
    runs_root, results = e0_run
    run = run_folder_from(results[0])
    (run / "report.html").write_text("stale")                   # a report that must be rendered again
    again = run_cli("report", str(run))
    assert again.returncode == 0 and again.stdout.strip() == str(run / "report.html")
    html = (run / "report.html").read_text()
    assert html != "stale" and 'id="ctxkit-header"' in html and run.name in html
    listing = run_cli("--runs-dir", str(runs_root), "ls")
    assert listing.returncode == 0
    assert run.name in listing.stdout and "succeeded" in listing.stdout and "TTFT p50" in listing.stdout


def test_plain_papermill_path(vllm_server, tmp_path):
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "CTXKIT_RUNS_DIR": str(tmp_path / "runs")}
    cmd = [sys.executable, "-m", "papermill", "notebooks/e0_smoke.ipynb", str(out), "-f", "params/e0_smoke.yaml",
           "-k", "ctxkit", "-p", "backend", "endpoint", "-p", "endpoint_url", vllm_server.base_url]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert out.is_file()
    (run,) = list((tmp_path / "runs" / "e0_smoke").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert json.loads((run / "run_metadata.json").read_text())["notes"].startswith("opened from a notebook")


@pytest.mark.parametrize("case, env, sets, cause", [
    ("vllm-missing", {"CTXKIT_VLLM_PYTHON": "/usr/bin/env"}, [], "BackendUnavailable"),
    ("dies-at-start", {}, ["server.extra_args=[--no-such-flag]"], "ServerDied"),
])
def test_e0_fails_fast_with_cause_and_leaves_nothing(vllm_server, tmp_path, case, env, sets, cause):
    shared_pgid = os.getpgid(vllm_server.proc.pid)
    t0 = time.monotonic()
    args = ["--runs-dir", str(tmp_path), "run", "e0_smoke"] + [a for s in sets for a in ("--set", s)]
    result = run_cli(*args, env=env)
    elapsed = time.monotonic() - t0
    assert result.returncode == 1
    assert elapsed < 60, elapsed
    run = run_folder_from(result)
    failure = json.loads((run / "failure.json").read_text())
    assert failure["error_type"] == cause, failure
    assert cause in result.stderr                      # on screen too
    assert (run / "notebook.ipynb").is_file() and (run / "report.html").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert vllm_processes(exclude_pgid=shared_pgid) == []
    assert run_groups_alive(run) == []
