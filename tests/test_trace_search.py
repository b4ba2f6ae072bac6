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


def long_every_eighth(path, rows=40):
    """A steady trace (one row every 50 ms) whose every eighth row has a 2,000-token prompt, the rest 100."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"timestamp": 50 * i, "input_length": 2000 if i % 8 == 7 else 100,
                                "output_length": 2, "hash_ids": []}) + "\n")
    return path


def test_a_search_down_stops_once_halving_the_rate_rescues_no_missed_row(tmp_path, monkeypatch):
    """Long prompts miss their TTFT unloaded (1 ms a prompt token: 2 s against 1 s; the short ones take 100 ms, far
    inside it on a busy machine too): the same rows miss at every rate, so the search stops after the first halving
    instead of halving down to its floor. (The first long rows finish before the probe is cut off at its fourth
    miss: the rule compares finished rows only.)"""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    trace = long_every_eighth(tmp_path / "trace.jsonl")
    sim = Simulated(ttft_ms=0, tpot_ms=1, prefill_ms_per_token=1.0, log_dir=tmp_path, seed=0).start()
    try:
        policy = SearchPolicy(target=0.9, start_rate=16, min_requests=10, max_requests=38, warmup_requests=2,
                              drain_s=5, max_wall_s=60, arrival="trace")
        result = search(sim, lambda p, b, n: from_trace(trace, vocab_size=4096, seed=p, limit=n),
                        SLO(ttft_ms=1000), policy, timeout_s=30)
    finally:
        sim.stop()
    assert [p.rate for p in result.probes] == [16, 8], result.stopped_because
    assert [p.verdict for p in result.probes] == ["fail", "fail"]
    assert result.goodput == 0.0 and result.low is None
    # a miss is a first token after 1 s (the rule leaves out requests cancelled when the probe was cut off)
    missed_at = [{rec.tags["trace_row"] for rec in p.records
                  if not rec.warmup and rec.t_first_ns and (rec.t_first_ns - rec.t_send_ns) / 1e6 > 1000}
                 for p in result.probes]
    both = missed_at[0] & missed_at[1]
    assert both and all(row % 8 == 0 for row in both)         # file lines are 1-based: rows 8, 16, ... are long
    assert result.stopped_because.startswith(f"the same {len(both)} trace rows missed at 16 and 8 req/s")
    # what E4 makes of a search that found no passing rate: its conclusion and its SLO-scale curve
    from ctxkit.experiments import e4_goodput as e4
    params = P.resolve("e4_goodput", sets=["slos=[{name: s, ttft_ms: 1000}]"])
    results = [e4.TopologyResult("sim", "aggregated", 1, "CPU core set", {}, searches={"s": result})]
    goodput = e4.goodput_table(params, results)
    text = e4.conclusions({"target": 0.9, "goodput": goodput.to_dict("records"), "comparison": e4.compare(goodput),
                           "probes": e4.probes_table(results).to_dict("records"), "checks": {},
                           "replay": e4.replay_rows(results)})
    assert "no topology met the 90% target at any rate probed; sim at its lowest, 8 req/s" in text
    assert "serves the most" not in text and "the same" in text
    # beside a topology that failed to start, whose row's error leaves NaN in the others' (a failed one hides none)
    failed = {"topology": "1P1D", "kind": "disaggregated", "slo": "s", "error": "BackendError: did not start"}
    rows = [row | {"error": float("nan")} for row in goodput.to_dict("records")] + [failed]
    assert "sim at its lowest, 8 req/s" in e4.none_passed({"target": 0.9, "goodput": rows,
                                                           "probes": e4.probes_table(results).to_dict("records")}, "s")
    scale = e4.slo_scale_table(params, results)        # drawn at the lowest rate probed, and marked as failed
    assert set(scale["rate"]) == {8} and set(scale["probe_verdict"]) == {"fail"}
    assert scale.sort_values("slo_scale")["attainment"].iloc[-1] < 1.0   # x1.6 is 1.6 s: the long rows take 2
    table = e4.missed_requests(params, results)            # each miss, at every probe: the long prompts, on TTFT
    assert len(table) == sum(p.missed for p in result.probes)
    assert set(table["prompt_tokens"]) == {2000} and set(table["missed"]) == {"ttft"}
    assert set(table[(table["probe"] == 1) & (table["status"] == "ok")]["trace_row"]) == missed_at[1]


def _probe(rate: float, missed_rows: set[int], rows: range, verdict: str = "fail", tag: bool = True,
           cancelled: frozenset = frozenset(), decided_by: str = "misses beyond what the target allows"):
    """A probe whose scored requests (one per trace row) met a 100 ms TTFT objective except `missed_rows`; the
    rows in `cancelled` were cut off with no first token after 300 ms (certain misses by age)."""
    from ctxkit.load.search import Probe
    from ctxkit.records import CANCELLED, RequestRecord
    records = []
    for row in rows:
        ttft_ns = (300 if row in missed_rows else 10) * 1_000_000
        rec = RequestRecord(f"r{row}", 100, 2, t_sched_ns=1, t_send_ns=1, t_first_ns=1 + ttft_ns,
                            t_last_ns=2 + ttft_ns, t_end_ns=2 + ttft_ns, chunk_times_ns=[1 + ttft_ns],
                            chunk_tokens=[2], n_out=2, tags={"trace_row": row} if tag else {})
        if row in cancelled:
            rec.status, rec.t_first_ns, rec.t_last_ns, rec.chunk_times_ns, rec.chunk_tokens, rec.n_out = \
                CANCELLED, None, None, [], [], 0
            rec.t_end_ns = 1 + 300 * 1_000_000
        records.append(rec)
    return Probe(0, rate, verdict=verdict, decided_by=decided_by, records=records)


def test_the_stop_rule_holds_only_when_no_missed_row_was_rescued():
    from ctxkit.load.search import same_rows_missed
    slo, policy = SLO(ttft_ms=100), SearchPolicy(min_requests=10, arrival="trace")
    rows = range(1, 21)
    assert same_rows_missed(_probe(2, {3, 9}, rows), _probe(1, {3, 9}, rows), slo, policy)
    # one row rescued by the lower rate: the load matters, go on down
    assert same_rows_missed(_probe(2, {3, 9}, rows), _probe(1, {3}, rows), slo, policy) is None
    # a row that met at the higher rate misses at the lower: not the same rows either
    assert same_rows_missed(_probe(2, {3}, rows), _probe(1, {3, 9}, rows), slo, policy) is None
    # too few rows decided in both probes
    assert same_rows_missed(_probe(2, {3}, range(1, 8)), _probe(1, {3}, range(1, 8)), slo, policy) is None
    # rows without a trace row (a synthetic workload) have nothing to compare
    assert same_rows_missed(_probe(2, {3}, rows, tag=False), _probe(1, {3}, rows, tag=False), slo, policy) is None
    # the lower probe passed; or it is not lower
    assert same_rows_missed(_probe(2, {3}, rows), _probe(1, {3}, rows, verdict="pass"), slo, policy) is None
    assert same_rows_missed(_probe(1, {3}, rows), _probe(1, {3}, rows), slo, policy) is None


def test_the_stop_rule_does_not_take_a_backlog_for_rows_that_miss_unloaded():
    """Above capacity every row misses at both rates, and a cut-off probe's cancelled requests are misses by age
    alone: neither says the misses are not from the load. Nor does a queue still growing, or Poisson arrivals over
    a trace's rows (their timestamps, and so their bursts, are not replayed)."""
    from ctxkit.load.search import CLIMBING, RISING, same_rows_missed
    slo, policy = SLO(ttft_ms=100), SearchPolicy(min_requests=10, arrival="trace")
    rows = range(1, 21)
    every = set(rows)
    assert same_rows_missed(_probe(4, every, rows), _probe(2, every, rows), slo, policy) is None
    cut = frozenset(range(12, 21))        # the rest cut off late: the same 11 decided rows, the same 2 misses
    assert same_rows_missed(_probe(4, {3, 9}, rows, cancelled=cut), _probe(2, {3, 9}, rows, cancelled=cut), slo,
                            policy)
    fewer = frozenset(range(8, 21))       # cut off: 7 finished rows, too few, though 13 more are certain misses
    assert same_rows_missed(_probe(4, {3}, rows, cancelled=fewer), _probe(2, {3}, rows, cancelled=fewer), slo,
                            policy) is None
    assert same_rows_missed(_probe(2, {3}, rows), _probe(1, {3}, rows, decided_by=RISING), slo, policy) is None
    assert same_rows_missed(_probe(2, {3}, rows), _probe(1, {3}, rows, decided_by=CLIMBING), slo, policy) is None
    poisson = SearchPolicy(min_requests=10, arrival="poisson")
    assert same_rows_missed(_probe(2, {3}, rows), _probe(1, {3}, rows), slo, poisson) is None


def test_the_fidelity_block_says_how_the_rows_group_in_time(tmp_path):
    from ctxkit.collectors.replay import arrival_bursts
    items = from_trace(bursty_trace(tmp_path / "t.jsonl"), vocab_size=4096, seed=0)   # 4 rows 5 ms apart: no two equal
    assert arrival_bursts(items) == {"timestamps": ROWS, "largest": 1, "rows_in_bursts": 0.0}
    with open(tmp_path / "b.jsonl", "w") as f:      # Mooncake-like: rows at the same timestamp
        for ts, n in ((0, 3), (3000, 1), (6000, 4)):
            for _ in range(n):
                f.write(json.dumps({"timestamp": ts, "input_length": 10, "output_length": 2}) + "\n")
    b = arrival_bursts(from_trace(tmp_path / "b.jsonl", vocab_size=4096, seed=0))
    assert b == {"timestamps": 3, "largest": 4, "rows_in_bursts": 7 / 8}


def test_a_missed_request_counts_the_prefill_beside_it():
    """Prompt tokens of other requests awaiting their first token while one awaited its own, and while it decoded."""
    from ctxkit.experiments.e4_goodput import others_prefilling
    ms = 1_000_000
    windows = [(0, 100 * ms, 50, "a"), (50 * ms, 60 * ms, 700, "b"), (150 * ms, 400 * ms, 9000, "c"),
               (500 * ms, 510 * ms, 3, "d")]
    assert others_prefilling(windows, 0, 100 * ms, "a") == 700              # b's prefill inside a's wait
    assert others_prefilling(windows, 100 * ms, 300 * ms, "a") == 9000      # c's beside a's decode
    assert others_prefilling(windows, 100 * ms, 300 * ms, "c") == 0         # not its own
    assert others_prefilling(windows, None, 300 * ms, "a") == 0             # no first token: no decode window
