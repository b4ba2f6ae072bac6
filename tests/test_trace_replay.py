"""Trace replay as a user types it: `ctxkit bench --dataset-name trace` replays on the trace's timestamps and
reports its fidelity (lengths, prefix reuse the trace implies against the servers' prefix-cache hits, send lag)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ctxkit.collectors.replay import implied_reuse
from ctxkit.load.workloads import from_trace

from conftest import ROOT, run_cli

TRACE = ROOT / "tests/data/prefix_trace.jsonl"
# leading blocks sent before, per row: 0, 0, 1024 ([0,1]), 512 ([10]), 1536 ([0,1,2]), 0, 1024 ([10,11]), 0,
# 2048 ([0,1,2,3]), 1024 ([30,31])
IMPLIED = 1024 + 512 + 1536 + 1024 + 2048 + 1024


def test_implied_reuse_counts_the_leading_blocks_sent_before():
    items = from_trace(TRACE, vocab_size=4096)
    assert implied_reuse(items) == (IMPLIED, sum(len(it.prompt) for it in items))


def test_a_block_sent_in_part_is_reused_in_part():
    def item(ids, n):
        return SimpleNamespace(prompt=[0] * n, tags={"hash_ids": ids})
    # 300 tokens of block 7 went out; a later prompt holding all of block 7 and more reuses those 300, then stops
    assert implied_reuse([item([7], 300), item([7, 8], 1000)]) == (300, 1300)
    assert implied_reuse([item([7], 512), item([7], 512)]) == (511, 1024)     # the last token is always computed


def bench_trace(*args: str) -> tuple[dict, Path]:
    run = Path(result_path(run_cli(*args, "--dataset-name", "trace", "--dataset-path", str(TRACE), "--warmup", "0",
                                   timeout=600)))
    return json.loads((run / "summary.json").read_text())["replay"], run


def result_path(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.vllm
@pytest.mark.slow
def test_trace_replay_fidelity_with_prefix_caching_off_and_on(vllm_server, runs_dir):
    off, _ = bench_trace("--runs-dir", str(runs_dir), "bench", "--base-url", vllm_server.base_url, "--model",
                         "tiny-llama")          # the shared server runs with prefix caching off
    assert off["arrival"] == "trace" and off["on_trace_timestamps"] and off["requests"] == 10
    assert off["lengths_exact"] and off["implied_reusable_tokens"] == IMPLIED
    assert off["measured_prefix_hits"] <= 0.05 * IMPLIED, off
    assert off["send_lag"]["max_ms"] >= off["send_lag"]["p50_ms"] >= 0

    on, run = bench_trace("--runs-dir", str(runs_dir), "bench", "--profile", "cpu-tiny")   # its own server
    assert on["lengths_exact"] and on["implied_reusable_tokens"] == IMPLIED
    assert on["measured_prefix_hits"] >= 0.8 * IMPLIED, on
    sched = [json.loads(line)["t_sched_ns"] for line in (run / "requests.jsonl").read_text().splitlines()]
    assert (max(sched) - min(sched)) / 1e6 == pytest.approx(3600, abs=1)   # sent on the trace's timestamps


def test_a_trace_workload_gives_e2_a_replay_point_by_default():
    from ctxkit import params as P
    p = P.resolve("e2_concurrency", sets=["workload.dataset=trace", f"workload.dataset_path={TRACE}"])
    assert p.trace_speedups == [1.0]                 # on the trace's own timestamps unless told otherwise
    with pytest.raises(P.ParamError, match="trace_speedups replay a trace"):
        P.resolve("e2_concurrency", sets=["trace_speedups=[2]"])
    window = from_trace(TRACE, vocab_size=4096, start_ms=800, duration_ms=1200, speedup=2)
    assert [it.arrival_ms for it in window] == [0.0, 200.0, 400.0]        # rows at 800, 1200, 1600 ms, twice as fast
    assert window[0].prompt == from_trace(TRACE, vocab_size=4096)[2].prompt   # the whole trace's tokens there


@pytest.mark.vllm
@pytest.mark.slow
def test_e2_replays_a_trace_on_its_timestamps_at_two_speeds(vllm_server, runs_dir):
    """E2 with trace points (`trace_speedups`) through the shared server (prefix caching off): each point sends the
    trace's ten rows on its timestamps divided by the speedup, and its fidelity block is in the summary."""
    run = Path(result_path(run_cli(
        "--runs-dir", str(runs_dir), "run", "e2_concurrency", "--set", "backend=endpoint",
        "--set", f"endpoint_url={vllm_server.base_url}", "--set", "workload.dataset=trace",
        "--set", f"workload.dataset_path={TRACE}", "--set", "concurrency_levels=[]", "--set", "trace_speedups=[1,2]",
        timeout=600)))
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert "replay_lengths_exact" in summary["checks"] and set(summary["replay"]) == {"t1", "t2"}
    for point in ("t1", "t2"):
        r = summary["replay"][point]
        assert r["requests"] == 10 and r["lengths_exact"] and r["implied_reusable_tokens"] == IMPLIED
        assert r["measured_prefix_hits"] <= 0.05 * IMPLIED, r
    sched: dict[str, list[int]] = {}
    for line in (run / "requests.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if not rec.get("warmup"):
            sched.setdefault(rec["tags"]["point"], []).append(rec["t_sched_ns"])
    spans = {p: (max(v) - min(v)) / 1e6 for p, v in sched.items()}
    assert spans["t1"] == pytest.approx(3600, abs=1) and spans["t2"] == pytest.approx(1800, abs=1)
    rows = {row["point"]: row for row in summary["sweep"]}
    assert rows["t2"]["replay_implied_reuse"] == IMPLIED and rows["t2"]["replay_lengths_exact"]


def test_a_trace_path_is_taken_from_where_ctxkit_starts_and_checked_before_anything(runs_dir, monkeypatch):
    """The notebook runs inside the run folder: a relative path must be made absolute when the parameters are
    resolved (on a GPU it named nothing there, after a server start); a missing file is refused before a run folder."""
    from ctxkit import params as P
    monkeypatch.chdir(TRACE.parent)
    p = P.resolve("e2_concurrency", sets=["workload.dataset=trace", f"workload.dataset_path={TRACE.name}"])
    assert p.workload.dataset_path == str(TRACE.resolve())
    gone = run_cli("--runs-dir", str(runs_dir), "run", "e2_concurrency", "--set", "workload.dataset=trace",
                   "--set", "workload.dataset_path=no/such/trace.jsonl", timeout=120)
    assert gone.returncode == 2 and "no such file: no/such/trace.jsonl" in gone.stderr, gone.stderr[-2000:]
    assert not any(runs_dir.iterdir())
