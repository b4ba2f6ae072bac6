"""The client against ground truth: a simulated server (explicitly allowed) with TTFT 50 ms and 10 ms per token,
64 concurrent streams. ctxkit's p50 TTFT must be within 2 ms and p50 TPOT within 0.5 ms of the truth."""
from __future__ import annotations

import pytest

from ctxkit.backends import BackendUnavailable, Simulated
from ctxkit.collectors.latency import summarize
from ctxkit.load.arrivals import Arrivals, run_load
from ctxkit.load.workloads import LengthDist, synthetic

TTFT_MS, TPOT_MS = 50.0, 10.0


def test_simulated_backend_refuses_without_opt_in(monkeypatch):
    monkeypatch.delenv("CTXKIT_ALLOW_SIMULATED_BACKEND", raising=False)
    with pytest.raises(BackendUnavailable, match="CTXKIT_ALLOW_SIMULATED_BACKEND=1"):
        Simulated()


def test_client_matches_ground_truth_at_64_streams(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    # Output lengths vary (12..36) as in any real workload; with identical lengths all 64 streams would end and
    # restart in lockstep, and every round would be a 64-request burst that queues in the simulator itself.
    items = synthetic(512, LengthDist("fixed", 128), LengthDist("uniform", 24, low=12, high=36), vocab_size=4096,
                      seed=0)
    warm = synthetic(64, LengthDist("fixed", 16), LengthDist("fixed", 4), vocab_size=4096, seed=1, id_prefix="w")
    with Simulated(ttft_ms=TTFT_MS, tpot_ms=TPOT_MS, log_dir=tmp_path) as sim:
        assert sim.mode == "simulated" and sim.version()["version"].startswith("simulated")
        records = run_load(sim.base_url, sim.model, items, Arrivals("concurrency", concurrency=64), warmup=warm)
    s = summarize(records)
    assert s["completed"] == 512 and s["failed"] == 0
    assert abs(s["ttft_ms"]["p50"] - TTFT_MS) <= 2.0, s["ttft_ms"]
    assert abs(s["tpot_ms"]["p50"] - TPOT_MS) <= 0.5, s["tpot_ms"]
