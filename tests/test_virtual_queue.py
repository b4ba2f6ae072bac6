"""The cost benchmark's virtual clock (benchmarks/virtual_queue.py): it must be the simulated server's M/M/K queue
(its share of TTFTs within the objective is the Erlang C closed form) and it must answer the search's stop rule as
the live client does (a probe far above capacity is cut off with its backlog kept as cancelled records). On it, the
real probe (ctxkit.load.search.run_probe) with the scouts' shorter warmup, deterministically: a probe's outcome here
is a function of its seed, not of how busy the machine is."""
from __future__ import annotations

import pytest
from test_goodput_search import MU, TARGET, K, S, capacity, erlang_c, items, mmk_attainment
from virtual_queue import VirtualQueue

from ctxkit.backends.simulated import service_s
from ctxkit.collectors import attainment as att
from ctxkit.collectors.latency import SLO
from ctxkit.load.arrivals import Arrivals
from ctxkit.load.search import SearchPolicy, run_probe


@pytest.mark.parametrize("load", [0.6, 0.85])
def test_the_virtual_queue_is_the_closed_form_mmk_queue(load):
    queue = VirtualQueue(K, 1000 / MU, seed=5)
    rate = load * K * MU
    stream = items(5)(0, 0, 40_000)
    records = queue.run_load(queue.base_url, queue.model, stream, Arrivals("poisson", rate, seed=5), timeout_s=30)
    assert len(records) == len(stream)
    late = records[len(records) // 10:]          # past the start from an empty queue
    met = att.tally(late, SLO(ttft_ms=1000 * S))["attainment"]
    assert met == pytest.approx(mmk_attainment(rate), abs=0.01)
    prompts = {it.request_id: it.prompt for it in stream}     # a wait: a first token later than the service alone
    waited = [r.t_first_ns - r.t_send_ns > service_s(5, prompts[r.request_id], 1000 / MU) * 1e9 + 1000 for r in late]
    assert sum(waited) / len(waited) == pytest.approx(erlang_c(rate), abs=0.02)      # 0.13 at 0.6, 0.55 at 0.85
    assert queue.probe_s[0] == pytest.approx(len(stream) / rate, rel=0.03)   # the stream's own span, in virtual s


def test_the_stop_rule_sees_what_the_live_client_shows_it():
    """Before each send: every request sent so far, finished ones (in completion order, ended by now) apart from
    those in flight (no end yet; a first token only if it came by now). A cancel ends the sends and keeps the
    requests then in flight as cancelled records, cut at that instant."""
    queue = VirtualQueue(K, 1000 / MU, seed=1)
    stream, calls = items(1)(0, 0, 400), []

    def watch(done, live, now):
        calls.append(now)
        assert len(done) + len(live) == min(len(calls) - 1, 300)               # sent before this call (300: the cut)
        assert all(r.t_end_ns <= now for r in done) and [r.t_end_ns for r in done] == sorted(r.t_end_ns for r in done)
        assert all(r.t_end_ns is None and (r.t_first_ns is None or r.t_first_ns <= now) for r in live)
        return "cancel" if len(calls) > 300 else None
    records = queue.run_load(queue.base_url, queue.model, stream, Arrivals("poisson", 2.0 * K * MU, seed=1),
                             timeout_s=30, stop=watch, drain_s=10)
    cut = [r for r in records if r.status == "cancelled"]
    assert len(records) == 300 and cut and {r.t_end_ns for r in cut} == {calls[-1]}
    assert calls == sorted(calls)


def test_a_probe_far_above_capacity_is_cut_off_with_its_backlog():
    queue = VirtualQueue(K, 1000 / MU, seed=3)
    policy = SearchPolicy(target=TARGET, min_requests=100, max_requests=400, warmup_requests=20, drain_s=10)
    with queue.patched():
        probe = run_probe(queue, 0, 20 * capacity(), items(3), SLO(ttft_ms=1000 * S), policy, timeout_s=30)
    assert probe.verdict == "fail" and probe.early_stop and probe.backlog > 0
    assert probe.decided < policy.max_requests                    # cut off: it did not wait for the whole probe
    assert queue.probe_s[0] < 1.0        # virtual seconds: once misses were certain (300 ms), not the backlog's drain


def test_a_scout_warms_up_for_a_third_and_its_pass_stays_a_scouts_even_in_full():
    """A scout's warmup covers scout_warmup_share of warmup_s, a full probe's all of it. A scout's pass is a scout's
    even when the probe went on to a full probe's floors (here a scout may stop no earlier than a full probe: only
    its warmup is shorter), so the search measures the rate again in full before it can be the answer."""
    policy = SearchPolicy(target=TARGET, min_requests=300, max_requests=600, scout_requests=300, warmup_requests=20,
                          warmup_s=6.0, seed=0)
    assert policy.scouts()                              # cheaper by its warmup alone
    probes = {}
    for scout in (True, False):
        queue = VirtualQueue(K, 1000 / MU, seed=0)
        with queue.patched():
            probes[scout] = run_probe(queue, 0, 60.0, items(0), SLO(ttft_ms=1000 * S), policy, timeout_s=30,
                                      scout=scout)
    scout, full = probes[True], probes[False]
    assert full.warmup == 360 and scout.warmup == 120                  # 6 s and 2 s at 60 req/s
    assert sum(r.warmup for r in scout.records) == 120
    assert scout.verdict == full.verdict == "pass" and scout.decided >= policy.min_requests
    assert scout.scout and not full.scout
    assert SearchPolicy(warmup_s=6.0, scout_warmup_share=1.0).warmup(60.0, scout=True) == 360


def test_a_probe_undecided_only_after_its_stop_does_not_claim_the_request_cap():
    """A scout stops sending on a Wilson pass; the requests then in flight may leave it undecided, and the point
    estimate decides. That is not the request cap (it sent a fraction of it), and decided_by must not say so."""
    policy = SearchPolicy(target=TARGET, min_requests=300, max_requests=600, warmup_requests=20, warmup_s=6.0,
                          min_duration_s=4.0, seed=0)
    queue = VirtualQueue(K, 1000 / MU, seed=0)
    with queue.patched():
        probe = run_probe(queue, 0, 80.0, items(0), SLO(ttft_ms=1000 * S), policy, timeout_s=30, scout=True)
    assert probe.scout and probe.sent < policy.max_requests
    assert att.verdict(probe.met, probe.decided, TARGET) == "undecided"           # 49 of 50: Wilson low 0.895
    assert probe.decided_by.startswith("point estimate") and "cap" not in probe.decided_by
