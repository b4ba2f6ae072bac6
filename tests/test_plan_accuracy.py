"""The accuracy benchmark (benchmarks/plan_accuracy.py) reads the E4 answers recorded on the calibration's device,
model and compilation mode, and sets the model's prediction beside each."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from test_plan_model import calibration

from ctxkit.plan.placements import Placement, Slo, Workload, goodput

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "docs" / "results" / "2026-12-07-h100" / "e4_goodput"       # one H100, compiled, Llama 3.1 8B


def test_the_benchmark_sets_a_prediction_beside_each_matching_answer(tmp_path):
    shutil.copytree(RUN, tmp_path / "runs" / "h100" / "e4_goodput")
    h100 = calibration().model_copy(update={"device": "1 x NVIDIA H100 80GB HBM3"})
    h100.save(tmp_path / "h100.json")
    h200 = h100.model_copy(update={"device": "1 x NVIDIA H200"})
    h200.save(tmp_path / "h200.json")
    done = [subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_accuracy.py"), "--calibration",
                            str(tmp_path / f"{c}.json"), "--runs", str(tmp_path / "runs")], capture_output=True,
                           text=True, timeout=600) for c in ("h100", "h200")]
    assert done[0].returncode == 0, done[0].stderr[-2000:]
    rows = [line for line in done[0].stdout.splitlines() if line.startswith("| h100/e4_goodput |")]
    assert len(rows) == 2                                   # the run's two searches, one per SLO setting
    assert all("| aggregated x1 | 4096 / 256 | 2500 / 25 | 4.5 (4.5-4.91) |" in r for r in rows)
    predicted = goodput(Placement(replicas=1), h100, Workload(input_len=4096, output_len=256),
                        Slo(ttft_ms=2500, tpot_ms=25))
    assert all(f"| {predicted:.3g} | {4.5 / predicted:.2f}" in r for r in rows)     # the model's own answer
    assert "0 E4 answers match" in done[1].stdout           # another GPU's calibration predicts none of them
