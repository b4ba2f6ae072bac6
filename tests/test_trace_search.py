"""The goodput search over a trace (issue 14: trace replay in E4): a probe at rate r replays the trace's rows on their
own timestamps, scaled so that their mean rate is r (the search runs over the trace's speedup), with fresh tokens
per probe and the replay's fidelity recorded. The simulated server (explicitly allowed) stands in for vLLM here: what
is checked is what the client sends and records, on a schedule that is exact by construction."""
from __future__ import annotations

import json

import pytest

from ctxkit import params as P
from ctxkit.backends import Simulated
from ctxkit.collectors.latency import SLO
from ctxkit.load.search import SearchPolicy, run_probe, search
from ctxkit.load.workloads import from_trace

from conftest import ROOT, run_cli

ROWS, INPUT = 40, 600


def bursty_trace(path):
    """Bursts of four rows 5 ms apart every 250 ms; every prompt starts with the same 512-token block (hash id 0)."""
    with open(path, "w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"timestamp": 250 * (i // 4) + 5 * (i % 4), "input_length": INPUT,
                                "output_length": 2, "hash_ids": [0, i + 1]}) + "\n")
    return path


def test_a_trace_probe_replays_the_rows_on_their_timestamps_scaled_to_its_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    trace = bursty_trace(tmp_path / "trace.jsonl")
    own = (ROWS - 1) / 2.265                       # the trace's mean rate: 39 gaps over 2,265 ms
    rate = 2 * own
    sim = Simulated(ttft_ms=0, tpot_ms=1, log_dir=tmp_path, seed=0).start()
    try:
        policy = SearchPolicy(target=0.9, min_requests=10, max_requests=40, warmup_requests=2, drain_s=10,
                              arrival="trace")
        probe = run_probe(sim, 3, rate, lambda p, b, n: from_trace(trace, vocab_size=4096, seed=p, limit=n),
                          SLO(ttft_ms=5000), policy, timeout_s=30)
    finally:
        sim.stop()
    assert probe.speedup == pytest.approx(2.0)
    assert probe.planned == ROWS - 2                 # the window's rows after the unscored head, not max_requests
    sched = sorted(r.t_sched_ns for r in probe.records)     # the probe may stop sending once it has a verdict
    offsets = [(t - sched[0]) / 1e6 for t in sched]
    assert len(offsets) > 20
    assert offsets == pytest.approx([(250 * (i // 4) + 5 * (i % 4)) / 2 for i in range(len(offsets))], abs=0.01)
    r = probe.replay
    assert r["requests"] == len(offsets) and r["lengths_exact"]
    assert r["implied_reusable_tokens"] == (len(offsets) - 1) * 512   # block 0 again in every prompt after the first
    assert probe.row()["speedup"] == pytest.approx(2.0)
    from ctxkit.experiments.e4_goodput import replay_view
    html = replay_view({"replay": [{"topology": "sim", "slo": "s", "probe": probe.index, "rate": rate,
                                    "speedup": probe.speedup, **r}]}).to_html()
    assert "send lag p99 ms" in html and "2.00" in html          # the notebook's table of it renders


def test_a_trace_workload_is_searched_on_its_timestamps_unless_told():
    trace = f"workload.dataset_path={ROOT / 'tests/data/prefix_trace.jsonl'}"
    p = P.resolve("e4_goodput", sets=["workload.dataset=trace", trace])
    assert p.search.arrival == "trace"
    assert P.resolve("e4_goodput", sets=["workload.dataset=trace", trace,
                                         "search.arrival=poisson"]).search.arrival == "poisson"
    with pytest.raises(P.ParamError, match="search.arrival=trace replays a trace"):
        P.resolve("e4_goodput", sets=["search.arrival=trace"])


def test_a_trace_window_too_short_for_a_probe_is_refused_before_anything(runs_dir):
    """The shipped ten-row trace cannot fill a probe (4 unscored + 40 scored by default): refused, no run folder."""
    result = run_cli("--runs-dir", str(runs_dir), "run", "e4_goodput", "--set", "workload.dataset=trace",
                     "--set", f"workload.dataset_path={ROOT / 'tests/data/prefix_trace.jsonl'}", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the trace window holds 10 rows; a probe needs at least" in result.stderr
    assert not any(runs_dir.iterdir())


def test_bench_searches_a_trace_over_its_speedup(tmp_path, monkeypatch):
    """What a user types: `ctxkit bench --dataset-name trace ... --search rate` (the simulated backend, allowed)."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    trace = bursty_trace(tmp_path / "trace.jsonl")
    (tmp_path / "p.yaml").write_text("backend: simulated\nsearch: {min_requests: 10, max_requests: 20, "
                                     "warmup_requests: 2, max_probes: 2, max_wall_s: 60, drain_s: 5, start_rate: 10}\n")
    result = run_cli("--runs-dir", str(tmp_path / "runs"), "bench", "-p", str(tmp_path / "p.yaml"),
                     "--dataset-name", "trace", "--dataset-path", str(trace), "--goodput", "ttft:2000",
                     "--search", "rate", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(next((tmp_path / "runs").glob("bench/*/summary.json")).read_text())
    own = 21 / 1.255          # each probe's 22 rows (2 unscored + 20): 21 gaps over 1,255 ms of the trace
    assert [round(r["speedup"], 3) for r in summary["replay"]] == [round(10 / own, 3), round(20 / own, 3)]
    assert all(r["lengths_exact"] and r["on_trace_timestamps"] for r in summary["replay"])


def test_a_search_stops_when_its_rate_outgrows_the_trace_window(tmp_path, monkeypatch):
    """The unscored head covers warmup_s at the probe's rate: at 20 req/s it takes 40 rows, the whole window, and
    the search stops there saying so, keeping the probe it made (rather than failing the topology)."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    trace = bursty_trace(tmp_path / "trace.jsonl")
    sim = Simulated(ttft_ms=0, tpot_ms=1, log_dir=tmp_path, seed=0).start()
    try:
        policy = SearchPolicy(target=0.9, start_rate=10, min_requests=10, max_requests=20, warmup_requests=2,
                              warmup_s=2.0, drain_s=5, arrival="trace")
        result = search(sim, lambda p, b, n: from_trace(trace, vocab_size=4096, seed=p, limit=n), SLO(ttft_ms=5000),
                        policy, timeout_s=30)
    finally:
        sim.stop()
    assert [p.rate for p in result.probes] == [10]
    assert result.stopped_because.startswith("trace window too short at 20 req/s")


def test_a_random_workload_ignores_a_stale_path_and_a_trace_search_sets_its_own_speedup():
    assert P.resolve("e4_goodput", sets=["workload.dataset_path=/no/such/file"]).workload.dataset_path == "/no/such/file"
    trace = f"workload.dataset_path={ROOT / 'tests/data/prefix_trace.jsonl'}"
    with pytest.raises(P.ParamError, match="the search over a trace sets the speedup itself"):
        P.resolve("e4_goodput", sets=["workload.dataset=trace", trace, "workload.trace_speedup=2"])
