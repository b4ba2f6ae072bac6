"""E1 and E2 end to end on the cpu-tiny profile, the interrupted-and-resumed sweep, the comparison report, and
every report opened in headless Chromium."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from browser import probe_report
from conftest import ROOT, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

E2_FAST = ["--set", "concurrency_levels=[1, 2, 4, 8]", "--set", "requests_per_point=16"]


def last_line_path(result) -> Path:
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_dir(), result.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def e1_run(runs_root):
    result = run_cli("--runs-dir", str(runs_root), "run", "e1_latency")
    assert result.returncode == 0, result.stderr[-4000:]
    return last_line_path(result), result


@pytest.fixture(scope="module")
def e2_run(runs_root):
    result = run_cli("--runs-dir", str(runs_root), "run", "e2_concurrency", *E2_FAST, "--label", "full")
    assert result.returncode == 0, result.stderr[-4000:]
    return last_line_path(result), result


def assert_report_renders(report: Path, min_figures: int):
    seen = probe_report(report)
    assert seen["errors"] == [], seen["errors"]
    figures = [f for f in seen["figures"] if f["tag"] == "img"]
    assert len(figures) >= min_figures, seen["figures"]
    for f in figures:
        assert f["width"] > 0 and f["height"] > 0 and f["natural"] > 0, f


def test_e1_folder_curves_and_report(e1_run):
    run, result = e1_run
    for name in ("artifacts/e1_latency_curve.csv", "artifacts/e1_ttft_curve.svg", "artifacts/e1_tpot_curve.svg",
                 "summary.json", "report.html", "requests.jsonl", "notebook.ipynb"):
        assert (run / name).is_file(), name
    curve = pd.read_csv(run / "artifacts/e1_latency_curve.csv")
    assert list(curve["prompt_len"]) == [64, 128, 256, 512, 1024, 2048]
    for col in ("count", "p50_ttft_ms", "p95_ttft_ms", "avg_ttft_ms", "min_ttft_ms", "max_ttft_ms",
                "p50_tpot_ms", "p95_tpot_ms", "avg_tpot_ms", "min_tpot_ms", "max_tpot_ms"):
        assert col in curve, col
    assert (curve["count"] == 5).all()
    assert curve["p50_ttft_ms"].iloc[-1] > curve["p50_ttft_ms"].iloc[0]           # TTFT rises with length
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert summary["profiling"]["gpu"] == {"available": False, "reason": summary["profiling"]["gpu"]["reason"]}
    assert "point 6/6" in result.stderr                                          # progress on screen
    assert_report_renders(run / "report.html", min_figures=2)


def test_e2_folder_curves_goodput_and_report(e2_run):
    run, _ = e2_run
    for name in ("artifacts/e2_concurrency_curve.csv", "artifacts/e2_throughput_curve.svg",
                 "artifacts/e2_latency_curve.svg", "artifacts/e2_goodput_curve.svg", "report.html"):
        assert (run / name).is_file(), name
    curve = pd.read_csv(run / "artifacts/e2_concurrency_curve.csv")
    assert list(curve["concurrency"]) == [1, 2, 4, 8]
    assert curve["output_throughput"].iloc[-1] > curve["output_throughput"].iloc[0]
    assert (curve["request_goodput"] <= curve["request_throughput"] + 1e-9).all()
    assert (curve["token_goodput"] <= curve["output_throughput"] + 1e-9).all()
    for col in ("p50_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_e2e_ms", "slo_attainment"):
        assert col in curve, col
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert_report_renders(run / "report.html", min_figures=3)


def test_e2_interrupted_then_resumed(runs_root):
    """Ctrl-C after the first point: status interrupted, servers gone; --resume measures only what is missing."""
    proc = subprocess.Popen([sys.executable, "-m", "ctxkit.cli", "--runs-dir", str(runs_root), "run",
                             "e2_concurrency", *E2_FAST, "--label", "resumed"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    point = None
    while time.monotonic() < deadline and point is None:
        found = list((runs_root / "e2_concurrency").glob("run-*/artifacts/e2_points/c1.json"))
        point = next((p for p in found if "resumed" in (p.parents[2] / "run_metadata.json").read_text()), None)
        time.sleep(0.5)
    assert point is not None, "first point never finished"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    run = point.parents[2]
    assert proc.returncode == 1, err[-3000:]
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert json.loads((run / "failure.json").read_text())["error_type"] in ("KeyboardInterrupt", "Interrupted")
    from ctxkit.backends.process import group_members
    assert all(not group_members(int(g)) for g in (run / "logs/process_groups.txt").read_text().split())
    for line in (run / "requests.jsonl").read_text().splitlines():
        json.loads(line)                                                         # every line valid JSON
    done_before = {p.name for p in (run / "artifacts/e2_points").glob("*.json")}
    assert "c1.json" in done_before and len(done_before) < 4

    result = run_cli("--runs-dir", str(runs_root), "run", "e2_concurrency", "--resume", str(run))
    assert result.returncode == 0, result.stderr[-4000:]
    assert last_line_path(result) == run
    assert "already done" in result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["resumed_points"]) == {p[:-5] for p in done_before}
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert (run / "notebook.attempt-0.ipynb").is_file() and (run / "failure.attempt-0.json").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "succeeded"


def test_compare_two_e2_runs(e2_run, runs_root):
    full = e2_run[0]
    resumed = next(p for p in (runs_root / "e2_concurrency").glob("run-*")
                   if p != full and (p / "summary.json").is_file())
    result = run_cli("--runs-dir", str(runs_root), "compare", str(full), str(resumed))
    assert result.returncode == 0, result.stderr
    out = last_line_path(result)
    head = pd.read_csv(out / "artifacts/headline.csv")
    assert set(head["label"]) == {"full", "resumed"}
    diff = pd.read_csv(out / "artifacts/differences.csv")
    assert len(diff) == 0 or "key" in diff
    seen = probe_report(out / "report.html")
    assert seen["errors"] == [] and sum(f["tag"] == "svg" and f["width"] > 0 for f in seen["figures"]) >= 3
    bad = run_cli("--runs-dir", str(runs_root), "compare", str(full))
    assert bad.returncode == 2 and "at least two" in bad.stderr
