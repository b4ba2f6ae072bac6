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
