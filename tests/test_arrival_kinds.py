"""Every arrival process, with the default warmup and without, as a user types it: `ctxkit bench` against a real
vLLM server, and E2 with only Poisson rates. (A Poisson bench with the default warmup once crashed at start:
the warmup pass asked the arrival process for the due times of zero requests.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxkit.load.arrivals import KINDS, Arrivals

from conftest import ROOT, run_cli

pytestmark = pytest.mark.vllm

SMALL = ["--random-input-len", "64", "--random-output-len", "4", "--num-prompts", "6", "--seed", "7"]
KIND_ARGS = {
    "poisson": ["--request-rate", "20"],
    "gamma": ["--request-rate", "20", "--burstiness", "0.5"],
    "constant": ["--arrival", "constant", "--request-rate", "20"],
    "concurrency": ["--concurrency", "2"],
    # no --arrival: a trace is replayed on its own timestamps by default
    "trace": ["--dataset-name", "trace", "--dataset-path", str(ROOT / "tests/data/fresh_trace.jsonl")],
}


def test_a_trace_replays_on_its_timestamps_unless_told_otherwise():
    from ctxkit.params import BenchParams
    trace = {"dataset": "trace", "dataset_path": str(ROOT / "tests/data/fresh_trace.jsonl")}
    assert BenchParams(workload=trace).load.arrival == "trace"
    assert BenchParams(workload=trace, load={"request_rate": 5.0}).load.arrival == "poisson"   # an explicit choice
    assert BenchParams(workload=trace, load={"arrival": "constant", "request_rate": 5.0}).load.arrival == "constant"
    assert BenchParams().load.arrival == "poisson"


def test_every_kind_is_covered():
    assert set(KIND_ARGS) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KIND_ARGS))
def test_no_items_have_no_due_times(kind):
    assert Arrivals(kind, 5.0).offsets_s([]) == []


@pytest.mark.parametrize("warmup", [None, "0"], ids=["default-warmup", "no-warmup"])
@pytest.mark.parametrize("kind", sorted(KIND_ARGS))
def test_bench_every_arrival_kind(vllm_server, runs_dir, kind, warmup):
    args = ["--runs-dir", str(runs_dir), "bench", "--base-url", vllm_server.base_url, "--model", "tiny-llama",
            *SMALL, *KIND_ARGS[kind]] + (["--warmup", warmup] if warmup is not None else [])
    result = run_cli(*args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["profiling"]["latency"]["completed"] == 6 and summary["profiling"]["latency"]["failed"] == 0
    params = (run / "params.yaml").read_text()
    assert f"arrival: {kind}" in params
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    warm = [r for r in records if r["warmup"]]
    assert len(warm) == (2 if warmup is None else 0)          # the default warmup is 2 requests
    assert len(records) - len(warm) == 6


def test_e2_with_only_poisson_rates(vllm_server, runs_dir):
    """E2's default warmup before a first point that is a Poisson rate (no concurrency level at all)."""
    result = run_cli("--runs-dir", str(runs_dir), "run", "e2_concurrency", "--set", "backend=endpoint",
                     "--set", f"endpoint_url={vllm_server.base_url}", "--set", "concurrency_levels=[]",
                     "--set", "request_rates=[10, 20]", "--set", "requests_per_point=6",
                     "--set", "workload.input_len=64", "--set", "workload.output_len=4", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert [p["point"] for p in summary["sweep"]] == ["r10", "r20"]
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    assert sum(r["warmup"] for r in records) == 4 and sum(not r["warmup"] for r in records) == 12
