"""`ctxkit bench --calibrate` against the shared tiny vLLM server, as a user types it, and `ctxkit plan` from the
calibration file it writes: the fits come out of measured points and the plan rests on them."""
from __future__ import annotations

import json

import pytest

from ctxkit.plan.costs import Calibration

from conftest import run_cli

SMALL = """calibrate:
  prefill_lens: [64, 128, 256, 512]
  prefill_requests: 2
  decode_lens: [64, 256]
  decode_batches: [1, 4]
  output_len: 16
"""


@pytest.mark.vllm
def test_bench_calibrate_then_plan(vllm_server, runs_dir, tmp_path):
    (tmp_path / "small.yaml").write_text(SMALL)
    result = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", vllm_server.base_url, "--model", "tiny-llama",
                     "-p", str(tmp_path / "small.yaml"), "--calibrate", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = next(runs_dir.glob("bench/*/"))
    cal = Calibration.load(folder / "calibration.json")
    assert cal.prefill.points == 4 and cal.decode.points == 4
    assert cal.decode["one"] > 0 and cal.limits.kv_capacity_tokens > 0
    assert cal.runs == [folder.name] and "assumed" in cal.limits_from      # an endpoint's flags are not known
    assert (cal.limits.max_num_seqs, cal.limits.max_num_batched_tokens, cal.limits.async_scheduling) == (128, 2048, False)
    points = json.loads((folder / "summary.json").read_text())["calibration"]
    assert len(points["prefill"]["y"]) == 4 and len(points["decode"]["x"]) == 4    # the fits keep their points
    plan = run_cli("plan", "--calibration", str(folder / "calibration.json"), "--gpus", "1", "--input-len", "256",
                   "--output-len", "16", "--ttft-ms", "400", "--tpot-ms", "60", "--draws", "0", timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "| aggregated x1 |" in plan.stdout and "aggregated placements only" in plan.stdout
