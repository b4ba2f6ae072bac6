"""E6 end to end on real vLLM (the tiny card on the 2 CPU cores), as a user types it: `ctxkit run e6_plan` with its
defaults calibrates one server, plans 1, 2, 4 and 8 servers, searches E4's two CPU topologies live from the model's
answers and sets predicted beside measured."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ctxkit.plan.costs import Calibration

from conftest import run_cli

pytestmark = pytest.mark.vllm


@pytest.mark.slow
def test_e6_end_to_end(tmp_path):
    result = run_cli("--runs-dir", str(tmp_path), "run", "e6_plan", timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    cal = Calibration.load(run / "calibration.json")
    assert cal.runs == [run.name] and cal.transfer is not None and "assumed" in cal.transfer.source
    assert [p["gpus"] for p in summary["plans"]] == [1, 2, 4, 8]
    assert {p["placement"]["prefill"] for p in summary["plans"][2]["predicted"]} >= {1, 2, 3}   # every 4-GPU split
    table = pd.read_csv(run / "artifacts/e6_comparison.csv")
    assert list(table["topology"]) == ["aggregated x2", "1P1D example"]
    assert table["predicted"].notna().all() and table["measured"].notna().all()
    probes = pd.read_csv(run / "artifacts/e6_probes.csv")
    first = probes.sort_values("index").groupby("topology").first()
    for topology, row in table.set_index("topology").iterrows():
        assert first.loc[topology, "rate"] == pytest.approx(row["predicted"])     # each search starts at the model
    assert (run / "report.html").is_file()
