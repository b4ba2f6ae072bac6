"""Latency metrics from records with known times (DESIGN.md version 1)."""
from __future__ import annotations

import pytest

from ctxkit.collectors.latency import SLO, flat, request_latency, stats, summarize
from ctxkit.records import OK, TIMEOUT, RequestRecord

MS = 1_000_000


def rec(rid, send_ms, chunks_ms, tokens=None, status=OK, sched_ms=None, warmup=False):
    tokens = tokens or [1] * len(chunks_ms)
    r = RequestRecord(request_id=rid, prompt_tokens=10, max_tokens=sum(tokens), t_send_ns=int(send_ms * MS),
                      t_sched_ns=int((sched_ms if sched_ms is not None else send_ms) * MS), status=status,
                      warmup=warmup)
    if chunks_ms:
        r.chunk_times_ns = [int(c * MS) for c in chunks_ms]
        r.chunk_tokens = tokens
        r.t_first_ns, r.t_last_ns = r.chunk_times_ns[0], r.chunk_times_ns[-1]
        r.n_out = sum(tokens)
    return r


def test_request_latency_definitions():
    r = rec("a", 1000, [1050, 1060, 1080], tokens=[1, 1, 2], sched_ms=990)
    lat = request_latency(r)
    assert lat.ttft_ms == pytest.approx(50)
    assert lat.ttft_sched_ms == pytest.approx(60)
    assert lat.client_lag_ms == pytest.approx(10)
    assert lat.tpot_ms == pytest.approx(30 / 3)          # (t_last - t_first) / (n_out - 1), n_out = 4
    assert lat.e2e_ms == pytest.approx(80)
    assert lat.ntpot_ms == pytest.approx(20)
    assert lat.itl_ms == pytest.approx((10, 10, 10))     # the 2-token chunk gives two gaps of 20/2


def test_single_token_has_no_tpot():
    assert request_latency(rec("a", 1, [5])).tpot_ms is None


def test_single_token_output_cannot_miss_tpot():
    """A length mix draws some one-token outputs: they have no TPOT, which is not a TPOT miss (vLLM's benchmark
    counts it as 0); their TTFT still counts."""
    from ctxkit.collectors.attainment import outcome
    slo = SLO(ttft_ms=10, tpot_ms=1)
    one_fast, one_slow = rec("a", 1, [5]), rec("b", 1, [50])
    assert slo.met(one_fast, request_latency(one_fast))
    assert outcome(one_fast, slo).met is True
    assert not slo.met(one_slow, request_latency(one_slow))
    assert (outcome(one_slow, slo).ttft_miss, outcome(one_slow, slo).tpot_miss) == (True, False)
    empty = rec("c", 1, [])                                  # "completed" without a single token: no pace met
    assert not SLO(tpot_ms=1).met(empty, request_latency(empty))


def test_stats_and_empty():
    s = stats([1, 2, 3, 4, 5])
    assert (s["count"], s["min"], s["max"], s["avg"], s["p50"]) == (5, 1, 5, 3, 3)
    assert stats([])["count"] == 0 and stats([])["p50"] is None


def test_summary_throughput_goodput_and_failures():
    records = [
        rec("w", 500, [600, 610], warmup=True),                 # warmup: excluded
        rec("a", 1000, [1100, 1110, 1120]),                     # meets TTFT 150
        rec("b", 1000, [1200, 1210, 1220]),                     # misses TTFT 150
        rec("c", 1000, [], status=TIMEOUT),                     # failed: a miss
    ]
    s = summarize(records, SLO(ttft_ms=150))
    assert s["requests"] == 3 and s["completed"] == 2 and s["failed"] == 1
    assert s["errors_by_status"] == {"timeout": 1}
    assert s["duration_s"] == pytest.approx(0.220)
    assert s["output_throughput"] == pytest.approx(6 / 0.220)
    assert s["slo_attainment"] == pytest.approx(1 / 3)
    assert s["request_goodput"] == pytest.approx(1 / 0.220)
    assert s["token_goodput"] <= s["output_throughput"]
    assert s["vllm"]["completed"] == 2 and s["vllm"]["median_ttft_ms"] == pytest.approx(150)
    assert s["vllm"]["p99_e2el_ms"] is not None
    row = flat(s)
    assert row["p50_ttft_ms"] == pytest.approx(150) and row["count_tpot_ms"] == 2
