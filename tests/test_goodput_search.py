"""The goodput search against a simulated server whose capacity is known in closed form (explicitly allowed; the
real-vLLM E4 run is in test_e4_goodput.py): K prefill slots, exponential service, first come first served, i.e. an
M/M/K queue under Poisson arrivals, whose share of TTFTs within s is given by the Erlang C formula. The search must
find the rate at which that share is the target, again with another seed, within its probe cap; an overloaded probe ends
within its time cap with its backlog recorded. Wilson intervals and verdicts are checked against known values."""
from __future__ import annotations

import math
import time

import pytest
from virtual_queue import items

from ctxkit.backends import ServingBackend, Simulated
from ctxkit.collectors import attainment as att
from ctxkit.collectors.latency import SLO
from ctxkit.load.search import Probe, SearchPolicy, run_probe, search
from ctxkit.plan import queueing

# 8 slots, 80 ms mean service, TTFT objective 300 ms, target 90%: capacity 89.1 req/s at utilization 0.89.
# Chosen so that
# (a) the knee is steep: 0.96 attainment at 0.9 x capacity and 0.39 at 1.1 x, so a probe a tenth away from the
#     capacity is decided by a clear margin. (A 220 ms objective had a capacity of 79.3 but a knee of 0.92 -> 0.83
#     over the same span: probes of a few hundred requests, whose misses come in bursts as the queue fills and
#     drains, failed 0.92 probes at 0.73-0.76 and moved the answer by 11%; a simulation of the bare queue gave such
#     a probe a 14-16% chance of the wrong verdict at 0.9 x capacity, 3% with this objective.)
# (b) the simulator and the client (Python, on this 2-core machine) add little latency of their own against the
#     objective (at 160 req/s they measurably did).
# Probes score 300 requests and 4 s at least after 6 s of warmup: near the knee the queue needs seconds to relax to
# steady state (about 1/(K mu (1 - sqrt(rho))^2): 3 s at capacity), and a probe from an empty queue looks better
# than its steady state until it has.
K, MU, S, TARGET = queueing.REFERENCE.k, queueing.REFERENCE.mu, queueing.REFERENCE.s, queueing.REFERENCE.target
TOLERANCE = 0.05


def erlang_c(lam: float, k: int = K, mu: float = MU) -> float:
    return queueing.erlang_c(lam, k, mu)


def mmk_attainment(lam: float, k: int = K, mu: float = MU, s: float = S) -> float:
    return queueing.mmk_attainment(lam, k, mu, s)


def capacity(target: float = TARGET, k: int = K, mu: float = MU, s: float = S) -> float:
    return queueing.mmk_capacity(target, k, mu, s)


def test_the_known_capacity():
    assert capacity() == pytest.approx(89.1, abs=0.05)
    assert mmk_attainment(0.9 * capacity()) > 0.95 and mmk_attainment(1.1 * capacity()) < 0.4    # a steep knee


def test_wilson_interval_and_verdicts():
    lo, hi = att.wilson(90, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.8256, 0.9448)         # textbook values for 90/100
    assert att.wilson(0, 0) == (0.0, 1.0)
    assert att.verdict(40, 40, 0.9) == "pass"                        # 40/40: lower bound 0.912
    assert att.verdict(34, 34, 0.9) == "undecided"                   # 34/34: lower bound 0.898
    assert att.verdict(70, 100, 0.9) == "fail"
    assert att.verdict(90, 100, 0.9) == "undecided"


@pytest.fixture
def mmk(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")

    def start(seed: int) -> Simulated:
        return Simulated(ttft_ms=0, tpot_ms=1, queue_servers=K, service_ms=1000 / MU, log_dir=tmp_path,
                         seed=seed).start()
    servers = []
    yield lambda seed: servers.append(start(seed)) or servers[-1]
    for s in servers:
        s.stop()


@pytest.mark.parametrize("seed, start", [(0, 20.0), (1, 40.0)])    # another seed, another bracket
def test_search_finds_the_known_capacity(mmk, seed, start):
    import os
    import threading

    import psutil
    sim = mmk(seed)
    cpu0, sys0 = psutil.Process().cpu_times(), psutil.cpu_times()
    policy = SearchPolicy(target=TARGET, start_rate=start, tolerance=TOLERANCE, min_requests=300, max_requests=600,
                          warmup_requests=20, warmup_s=6.0, min_duration_s=4.0, max_probes=12, seed=seed)
    result = search(sim, items(seed), SLO(ttft_ms=1000 * S), policy, timeout_s=30)
    truth = capacity()
    probes = [(round(p.rate, 1), p.verdict, round(p.attainment or 0, 3), p.send_lag_p99_ms) for p in result.probes]
    cpu1, sys1 = psutil.Process().cpu_times(), psutil.cpu_times()
    probes.append({"threads": sorted(t.name for t in threading.enumerate()), "loadavg": os.getloadavg(),
                   "test_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
                   "machine_busy_s": round((sys1.user + sys1.system) - (sys0.user + sys0.system), 1),
                   "rss_mb": psutil.Process().memory_info().rss >> 20})      # evidence, should it fail under load
    assert result.converged and len(result.probes) <= policy.max_probes, probes
    assert result.high / result.low <= 1 + TOLERANCE
    # the bracket is within the tolerance of the truth (twice it: a probe's verdict is a sample, not the curve)
    assert abs(result.goodput / truth - 1) <= 2 * TOLERANCE, (result.goodput, truth, probes)


def test_an_overloaded_probe_ends_early_with_its_backlog(mmk):
    sim = mmk(3)
    policy = SearchPolicy(target=TARGET, min_requests=100, max_requests=400, warmup_requests=20, drain_s=10)
    rate = 20 * capacity()                                       # far beyond what the queue drains
    t0 = time.monotonic()
    probe = run_probe(sim, 0, rate, items(3), SLO(ttft_ms=1000 * S), policy, timeout_s=30)
    assert time.monotonic() - t0 < 20                           # ended on its own, far inside its caps
    assert probe.verdict == "fail" and probe.early_stop
    assert probe.backlog > 0                                     # what was in flight, cancelled and kept
    assert sum(r.status == "cancelled" for r in probe.records) == probe.backlog
    assert probe.decided < policy.max_requests                   # it did not wait for the whole probe
    assert probe.send_lag_p99_ms is not None                     # how far the client fell behind, recorded


def steady(n: int, ttft_ms, tpot_ms: float = 5.0):
    """Records sent 100 ms apart with the given TTFTs (a function of the index) and 8 tokens at tpot_ms."""
    from ctxkit.records import RequestRecord
    out = []
    for i in range(n):
        send = (i + 1) * 100_000_000                  # a send time of 0 would read as never sent
        first = send + int(ttft_ms(i) * 1e6)
        times = [first + k * int(tpot_ms * 1e6) for k in range(8)]
        out.append(RequestRecord(f"r{i}", 64, 8, t_sched_ns=send, t_send_ns=send, t_first_ns=first,
                                 t_last_ns=times[-1], t_end_ns=times[-1], chunk_times_ns=times,
                                 chunk_tokens=[1] * 8, n_out=8))
    return out


def test_a_climbing_queue_is_not_steady_even_within_its_slo():
    """A growing queue whose latency is still under the objective: the probe must not pass on it."""
    from ctxkit.load.search import rising
    slo = SLO(ttft_ms=1000, tpot_ms=50)
    assert not rising(steady(60, lambda i: 100 + (i % 7) * 10), slo)            # flat, noisy: steady
    assert rising(steady(60, lambda i: 50 + 12 * i), slo)                         # 50 -> 760 ms: climbing
    assert not rising(steady(60, lambda i: 5 + 0.5 * i), slo)                     # doubles, but far from the SLO
    # misses rise from 0 to 7 in 30 (z 2.8): growth when the later half misses the target, noise when it meets it
    burst = steady(60, lambda i: 2000 if i >= 30 and i % 4 == 0 else 100)
    assert rising(burst, slo, target=0.9) and not rising(burst, slo, target=0.7)


def test_a_probe_that_is_not_steady_says_which_sign_it_showed():
    """decided_by tells a climbing latency (every request may still have met its SLO: an H100 trace probe failed at
    60/60 met) from rising misses, so a report never shows "misses rising" beside no miss at all."""
    from ctxkit.load.search import CLIMBING, RISING, _score
    slo = SLO(ttft_ms=1000, tpot_ms=50)
    policy = SearchPolicy(target=0.9, min_requests=40, max_requests=60)
    climbing = Probe(0, 10.0)
    climbing.records, climbing.planned = steady(60, lambda i: 50 + 12 * i), 60         # 50 -> 760 ms, all met
    _score(climbing, slo, policy)
    assert (climbing.verdict, climbing.decided_by, climbing.missed) == ("fail", CLIMBING, 0)
    burst = Probe(1, 10.0)
    burst.records, burst.planned = steady(60, lambda i: 2000 if i >= 30 and i % 4 == 0 else 100), 200
    _score(burst, slo, policy)
    assert (burst.verdict, burst.decided_by) == ("fail", RISING)


def test_misses_allowed_scale_with_the_probes_planned_size():
    """A probe lengthened by min_duration_s plans more requests than max_requests; its early cut-off must allow the
    misses the target allows at that size (the GPU run cut a 204-request probe off at 7 misses: 10% of 60)."""
    from ctxkit.load.search import StopRule
    slo = SLO(ttft_ms=1000, tpot_ms=50)
    policy = SearchPolicy(target=0.9, min_requests=40, max_requests=60, min_duration_s=15)
    planned = policy.planned(11.3)
    assert planned == 204                                        # 11.3 req/s x 15 s x 1.2
    done = steady(40, lambda i: 2000 if i % 5 == 0 else 100)     # 8 misses in 40: over 6, under 20
    now = done[-1].t_end_ns
    assert StopRule(slo, policy, planned)(done, [], now) != "cancel"
    assert StopRule(slo, policy, policy.max_requests)(done, [], now) == "cancel"


def test_a_topology_whose_servers_fail_is_recorded_and_the_others_still_compared(monkeypatch, tmp_path):
    """One topology's servers die at start (a placement this vLLM refuses): the run keeps the other topologies'
    searches, the failed one is a row with its error, and the conclusion names it instead of hiding it."""
    from types import SimpleNamespace

    import pandas as pd

    from ctxkit.backends.base import ServerDied
    from ctxkit.experiments import e4_goodput
    from ctxkit.load.search import Probe, SearchResult
    from ctxkit.params import E4Params, TopologyParams
    from ctxkit.runs.folder import RunFolder

    def refuse(*_a, **_k):
        raise ServerDied("t-prefill-1 exited with code 1: NIXL side channel port in use")

    monkeypatch.setattr(e4_goodput, "build_pool", refuse)
    params = E4Params()
    spec = TopologyParams(kind="disaggregated", prefill=2, decode=2)
    bad = e4_goodput.measure_or_record(params, SimpleNamespace(logs=tmp_path), spec, 1, out=None, log=lambda _m: None)
    assert bad.error.startswith("ServerDied") and "side channel" in bad.error and bad.searches == {}
    probe = Probe(0, 4.0, sent=0, verdict="pass", decided_by="95% Wilson interval")
    good = e4_goodput.TopologyResult("aggregated x2", "aggregated", 2, "GPU", {"kind": "gpu"},
                                     searches={"default": SearchResult(4.0, 4.0, 4.4, True, "bracket", [probe])})
    run = RunFolder.create(tmp_path / "runs", "e4_goodput")
    summary = e4_goodput.summarize(params, run, [good, bad])        # what the notebook does after the searches
    e4_goodput.write_artifacts(params, run, [good, bad])
    table = pd.read_csv(run.artifacts / "e4_goodput.csv")
    row = table[table["topology"] == spec.label].iloc[0]
    assert "side channel" in row["error"] and pd.isna(row["goodput_per_device"])
    assert not summary["checks"]["every_topology_searched"]["passed"]
    (comparison,) = summary["comparison"]
    assert comparison["winner"] == "aggregated x2" and "runner_up" not in comparison
    text = e4_goodput.conclusions(summary)
    assert f"{spec.label} could not be searched: ServerDied" in text and "FAILED: every_topology_searched" in text
    assert "nan" not in text


def test_a_probe_paced_by_its_client_is_flagged_with_the_rate_it_offered():
    """A client that sends at half its schedule's pace (due every 50 ms, sent every 100 ms) offers 10 req/s, not
    20: the probe says so, and E4's conclusion warns that a pass there may overstate the servers."""
    import pandas as pd

    from ctxkit.experiments import e4_goodput
    from ctxkit.load.search import Probe, _score
    from ctxkit.params import E4Params
    slo, policy = SLO(ttft_ms=1000, tpot_ms=50), SearchPolicy(target=0.9, lag_bound_ms=100)
    on_time = Probe(0, 10.0, planned=60, records=steady(60, lambda i: 100))
    _score(on_time, slo, policy)
    assert on_time.offered_rate == pytest.approx(10.0) and not on_time.client_lagged
    behind = steady(60, lambda i: 100)
    for i, rec in enumerate(behind):
        rec.t_sched_ns = (i + 1) * 50_000_000            # due at 20 req/s; sent at 10
    late = Probe(1, 20.0, planned=60, records=behind)
    _score(late, slo, policy)
    assert late.verdict == "pass" and late.client_lagged and late.offered_rate == pytest.approx(10.0)
    assert late.send_lag_p99_ms > 2000
    probes = pd.DataFrame([{"topology": "aggregated x2", "slo": "default", **p.row()} for p in (on_time, late)])
    pace = e4_goodput.client_pace(E4Params(), probes)
    assert [r["rate"] for r in pace["lagged_probes"]] == [20.0]
    text = e4_goodput.conclusions({"comparison": [], "goodput": [], "client": pace, "checks": {}})
    assert "fell behind its schedule in 1 probe(s)" in text and "at 20 req/s, aggregated x2" in text


def test_inside_a_bracket_the_next_rate_follows_the_measured_attainments():
    """Where the pass end's attainment lies on the knee, the next probe goes near where the ends' attainments cross
    the target (not to the geometric middle), at least one tolerance step inside each end; when probes inside the
    bracket keep moving the same end, each next one reaches farther toward the other (Illinois). A pass end on the
    flat part (above 0.95 at a 0.9 target) says nothing of where the knee is: there, and where no line can be drawn,
    the middle."""

    from ctxkit.load.search import Probe, next_rate
    policy = SearchPolicy(target=0.9, tolerance=0.05)
    middle = math.sqrt(80 * 160)                                       # 113: where bisection goes
    failed = Probe(1, 160.0, attainment=0.10, verdict="fail")
    flat = Probe(0, 80.0, attainment=0.98, verdict="pass")
    assert next_rate([flat, failed], 80.0, 160.0, policy) == middle    # 0.98: no line from the flat part
    knee = Probe(0, 80.0, attainment=0.93, verdict="pass")
    guess = next_rate([knee, failed], 80.0, 160.0, policy)
    assert 80 * 1.05 <= guess < 90 < middle                            # near the pass end: 0.93 is close to 0.9
    near = Probe(0, 80.0, attainment=0.901, verdict="pass")
    assert next_rate([near, failed], 80.0, 160.0, policy) == 80 * 1.05   # one step up: a fail there closes it
    up = [Probe(2 + i, r, attainment=0.94, verdict="pass") for i, r in enumerate((84.0, 86.0, 88.0))]
    once, twice, thrice = (next_rate([knee, failed, *up[3 - k:]], 88.0, 160.0, policy) for k in (1, 2, 3))
    assert 88 * 1.05 <= once < twice < thrice <= 160 / 1.05             # the same ends, a longer creep: farther
    noisy = Probe(1, 160.0, attainment=0.93, verdict="fail")           # failed on its trend, not its attainment
    assert next_rate([knee, noisy], 80.0, 160.0, policy) == middle
    assert next_rate([knee, failed], 80.0, 86.0, policy) == math.sqrt(80 * 86)   # two steps do not fit


def fake_probes(monkeypatch, scout_up_to: float, full_up_to: float,
                turned: float | None = None) -> list[tuple[float, bool]]:
    """run_probe replaced by a server whose scouts pass up to `scout_up_to` req/s and whose full probes pass up to
    `full_up_to` (a scout may be optimistic: a short probe sees less of a queue); a scout at `turned` stops on its
    pass and what was in flight then turns it into a fail. Returns (rate, scout) as asked."""
    from ctxkit.load import search as search_mod
    asked: list[tuple[float, bool]] = []

    def probe(backend, index, rate, items_fn, slo, policy, *, timeout_s, on_records=None, scout=False, workers=1):
        asked.append((rate, scout))
        passed = rate <= (scout_up_to if scout else full_up_to)
        early = scout and (passed or rate == turned)        # what the stop rule's scout pass sets
        if early and rate == turned:
            passed = False
        return Probe(index, rate, attainment=1.0 if passed else 0.5, verdict="pass" if passed else "fail",
                     scout=early)
    monkeypatch.setattr(search_mod, "run_probe", probe)
    return asked


def test_the_bracket_is_found_by_scouts_and_its_ends_rest_on_full_probes(monkeypatch):
    """Probes before the bracket forms are scouts; inside it every probe is full; a bracket that closes on a
    scout's pass measures that rate again in full before the search stops."""
    asked = fake_probes(monkeypatch, scout_up_to=41.0, full_up_to=41.0)
    policy = SearchPolicy(start_rate=10.0, tolerance=0.05, min_requests=300)
    result = search(None, items(0), SLO(ttft_ms=300), policy, timeout_s=30)
    assert asked[:4] == [(10.0, True), (20.0, True), (40.0, True), (80.0, True)]     # doubling: scouts
    assert all(not scout for _, scout in asked[4:])                                   # narrowing: full
    assert (40.0, False) in asked               # the bracket's pass end, 40, measured again in full
    assert result.converged and result.goodput == 40.0 and result.high / result.low <= 1.05
    assert not {p.rate: p for p in result.probes}[result.low].scout


def test_a_scouts_optimistic_pass_never_becomes_the_answer(monkeypatch):
    """A scout that passed where a full probe fails: once three probes in a row failed in full above it, the full
    probe at its rate replaces it, and the search goes on below it, within the default probe cap, to an answer that
    full probes passed."""
    asked = fake_probes(monkeypatch, scout_up_to=45.0, full_up_to=33.0)
    policy = SearchPolicy(start_rate=10.0, tolerance=0.05, min_requests=300)
    result = search(None, items(0), SLO(ttft_ms=300), policy, timeout_s=30)
    assert asked.index((40.0, False)) == 6      # 80, 56.6, 47.6 failed in full: 40 measured again at once (fails)
    assert result.converged and 33.0 / 1.05 <= result.goodput <= 33.0


def test_a_scout_whose_pass_turned_into_a_fail_is_measured_again_in_full(monkeypatch):
    """A scout stops sending on a pass; the requests still in flight may then miss and turn its verdict. Such a
    probe never sets the bracket's fail end (a scout never fails early): its rate is measured again in full."""
    asked = fake_probes(monkeypatch, scout_up_to=41.0, full_up_to=41.0, turned=40.0)
    policy = SearchPolicy(start_rate=10.0, tolerance=0.05, min_requests=300)
    result = search(None, items(0), SLO(ttft_ms=300), policy, timeout_s=30)
    assert asked[2:5] == [(40.0, True), (40.0, False), (80.0, True)]   # 40 again in full (a pass), then on up
    assert result.converged and result.goodput == 40.0


def test_a_re_measure_is_not_a_halving_step():
    """Two failing trace probes a few percent apart (a fail, then a scout's rate measured again just below it)
    say nothing about whether halving the rate rescues rows: only a halving step may stop a trace search."""
    from ctxkit.load.search import same_rows_missed
    policy, slo = SearchPolicy(arrival="trace", min_requests=10), SLO(ttft_ms=300, tpot_ms=50)

    def failed(rate: float) -> Probe:                  # the same rows miss (every fourth) and the same rows meet
        records = steady(20, lambda i: 2000 if i % 4 == 0 else 100)
        for i, rec in enumerate(records):
            rec.tags["trace_row"] = i
        return Probe(0, rate, verdict="fail", records=records)
    assert same_rows_missed(failed(10.44), failed(5.22), slo, policy)        # halving rescued none: stop
    assert same_rows_missed(failed(5.22), failed(5.0), slo, policy) is None  # a re-measure just below: no step


def test_a_scout_passes_early_on_its_wilson_verdict_but_never_fails_early():
    """A scout may stop sending once scout_requests are decided and the Wilson interval passes, before a full
    probe's min_requests and min_duration_s; on a fail it goes on (misses near capacity come in bursts)."""
    from ctxkit.load.search import StopRule
    slo = SLO(ttft_ms=1000, tpot_ms=50)
    policy = SearchPolicy(target=0.9, min_requests=300, max_requests=600, min_duration_s=10.0, scout_requests=40)
    met = steady(40, lambda i: 100)                                # 40 of 40 met: Wilson low 0.912, over 4 s
    now = met[-1].t_end_ns
    assert StopRule(slo, policy, 600, scout=True)(met, [], now) == "drain"
    assert StopRule(slo, policy, 600, scout=False)(met, [], now) is None     # a full probe goes on to its floors
    missed = steady(40, lambda i: 2000 if i < 12 else 100)         # 28 of 40: a Wilson fail, under the cut-off
    assert StopRule(slo, policy, 600, scout=True)(missed, [], missed[-1].t_end_ns) is None
    assert not SearchPolicy(min_requests=40, scout_requests=40).scouts()   # no cheaper than a full probe
    assert SearchPolicy(min_requests=40, min_duration_s=4.0, scout_requests=40).scouts()


def test_the_stop_rule_computes_each_finished_requests_latency_once(monkeypatch):
    """The rule runs before every send; a finished record is counted once, when it first appears (its latencies,
    its inter-token gaps, computed once), not at every check: a call's cost must not grow with the probe (it
    delayed a burst's later sends)."""
    from ctxkit.load import search as search_mod
    from ctxkit.records import RequestRecord
    calls: list[str] = []
    real = search_mod.request_latency
    monkeypatch.setattr(search_mod, "request_latency", lambda rec: calls.append(rec.request_id) or real(rec))
    ms = 1_000_000
    recs = [RequestRecord(f"r{i}", 100, 50, t_sched_ns=i * ms, t_send_ns=i * ms, t_first_ns=(i + 50) * ms,
                          t_last_ns=(i + 99) * ms, t_end_ns=(i + 100) * ms,
                          chunk_times_ns=[(i + 50 + k) * ms for k in range(50)], chunk_tokens=[1] * 50, n_out=50)
            for i in range(40)]
    stop = search_mod.StopRule(SLO(ttft_ms=100, tpot_ms=10), search_mod.SearchPolicy(min_requests=10), 80)
    done: list = []
    answers = []
    for rec in recs:                               # as the client holds them: the finished list only grows
        done.append(rec)
        answers += [stop(done, [], 200 * ms) for _ in range(3)]
    assert sorted(calls) == sorted(r.request_id for r in recs)                            # once each
    # 40 of 40 met is a Wilson pass: the steady-state check ran over every record too, and drained
    assert answers[-1] == "drain" and (stop.met, stop.missed) == (40, 0)


def test_the_packet_says_which_probes_were_scouts_and_what_each_search_cost():
    from ctxkit.runs.packet import probes_table
    row = dict(topology="aggregated x1", slo="default", met=40, decided=40, attainment=1.0, wilson_low=0.91,
               wilson_high=1.0, decided_by="95% Wilson interval", send_lag_p99_ms=3.0)
    probes = [{**row, "rate": 2.0, "verdict": "pass", "scout": True, "sent": 40, "wall_s": 20.5},
              {**row, "rate": 4.0, "verdict": "fail", "scout": False, "sent": 110, "wall_s": 31.0}]
    lines = probes_table(probes)
    assert sum("pass (scout)" in line for line in lines) == 1 and sum("| fail |" in line for line in lines) == 1
    assert "- search cost, aggregated x1 / default: 2 probes (1 scouts), 150 scored requests, 51.5 s of probes" \
        in lines


def test_a_scout_found_not_steady_after_its_short_warmup_is_measured_again_in_full(monkeypatch):
    """A scout warms up for a third of warmup_s. Latency still climbing through it may be the empty queue filling,
    which a full warmup would have absorbed: such a fail is a scout's, and the search measures the rate again in
    full. The same climb after a full warmup is a fail that stands."""
    from ctxkit.load import search as search_mod

    def climbing(base_url, model, items, arrivals, **_):            # every request met, latency rising throughout
        recs = steady(len(items), lambda i: 50 + 20 * i)
        for rec, it in zip(recs, items):
            rec.request_id = it.request_id
        return recs
    monkeypatch.setattr(search_mod, "run_load", climbing)
    policy = SearchPolicy(target=0.9, min_requests=40, max_requests=60, warmup_requests=10, warmup_s=3.0)
    slo, backend = SLO(ttft_ms=2000), ServingBackend()    # never reached: run_load is replaced
    scout, full = (run_probe(backend, 0, 10.0, items(0), slo, policy, timeout_s=30, scout=s) for s in (True, False))
    assert (scout.warmup, full.warmup) == (10, 30) and scout.missed == full.missed == 0
    assert scout.verdict == full.verdict == "fail" and scout.decided_by == full.decided_by == search_mod.CLIMBING
    assert scout.scout and not full.scout
    asked = []

    def probe(backend, index, rate, *args, scout=False, **kwargs):      # the scout's fail above, then a full pass
        asked.append((rate, scout))
        return scouted if scout else Probe(index, rate, attainment=1.0, verdict="pass")
    scouted = scout
    monkeypatch.setattr(search_mod, "run_probe", probe)
    search(None, items(0), slo, SearchPolicy(start_rate=10.0, max_probes=2), timeout_s=30)
    assert asked == [(10.0, True), (10.0, False)]                  # the same rate again, in full, at once
