"""The goodput's confidence interval: per-probe bounds that count dependence, and the interval they invert to."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxkit.collectors import attainment as att
from ctxkit.load.search import Probe, goodput_interval

Z95 = 1.6448536269514722           # one-sided 95%, independent draws


def bursty(n: int, p: float, stay: float, rng: np.random.Generator) -> np.ndarray:
    """Outcomes of a two-state Markov chain whose stationary share met is p: with probability `stay` a request
    repeats its predecessor's outcome (a queue's misses come in bursts), else it is a fresh draw."""
    x = np.empty(n, dtype=bool)
    x[0] = rng.random() < p
    for i in range(1, n):
        x[i] = x[i - 1] if rng.random() < stay else rng.random() < p
    return x


def lower_bound_coverage(stay: float, n: int = 600, runs: int = 300) -> tuple[float, float]:
    """How often the one-sided 95% lower bound lies at or below the true 0.9: batch means, and Wilson (independent)."""
    rng = np.random.default_rng(7)
    batch = wilson = 0
    for _ in range(runs):
        x = bursty(n, 0.9, stay, rng)
        batch += att.batch_means(list(x)).low <= 0.9
        wilson += att.wilson(int(x.sum()), n, Z95)[0] <= 0.9
    return batch / runs, wilson / runs


def test_bounds_that_count_dependence_cover_where_a_binomial_interval_does_not():
    """Bursts of ten (stay 0.9): Wilson, counting 600 requests as independent, covers about 60% of the time for a
    nominal 95%; batch means about 89%. Independent outcomes: both near 95%, batch means never narrower."""
    batch, wilson = lower_bound_coverage(stay=0.9)
    assert batch >= 0.85 and wilson <= 0.7
    batch, wilson = lower_bound_coverage(stay=0.0)
    assert batch >= 0.93 and wilson >= 0.92


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=400))
def test_batch_means_bounds_hold_the_share_met_and_never_count_more_than_n(outcomes):
    b = att.batch_means(outcomes)
    share = sum(outcomes) / len(outcomes)
    assert 0.0 <= b.low <= share <= b.high <= 1.0
    assert 0 < b.n_eff <= len(outcomes)


def probe(rate: float, low: float, high: float, scout: bool = False, lagged: bool = False) -> Probe:
    p = Probe(0, rate, attainment_low=low, attainment_high=high, scout=scout, client_lagged=lagged)
    return p


def test_the_interval_is_the_highest_rate_shown_above_target_and_the_lowest_shown_below():
    probes = [probe(10, 0.95, 1.0), probe(20, 0.92, 0.99), probe(22, 0.85, 0.97), probe(25, 0.5, 0.8),
              probe(40, 0.0, 0.05)]
    assert goodput_interval(probes, 0.9) == (20, 25)
    assert goodput_interval(probes[:3], 0.9) == (20, None)          # nothing shown above the goodput: unbounded


def test_a_scouts_pass_and_a_client_paced_probe_do_not_narrow_the_interval():
    """A scout's short warmup flatters the queue (its fail stands); a paced probe did not offer its rate."""
    probes = [probe(10, 0.95, 1.0), probe(20, 0.95, 1.0, scout=True), probe(30, 0.5, 0.8, lagged=True),
              probe(35, 0.2, 0.6, scout=True)]
    assert goodput_interval(probes, 0.9) == (10, 35)


def test_probes_that_contradict_each_other_widen_the_interval_past_both():
    """A pass shown at 30 above a fail shown at 25: both set aside, the interval runs from the pass below 25 to the
    fail above 30. At one rate shown both ways (a repeat that flipped) it never collapses to a point."""
    probes = [probe(10, 0.95, 1.0), probe(30, 0.92, 0.99), probe(25, 0.5, 0.8), probe(40, 0.0, 0.05)]
    assert goodput_interval(probes, 0.9) == (10, 40)
    same = [probe(10, 0.95, 1.0), probe(20, 0.92, 0.99), probe(20, 0.6, 0.85), probe(40, 0.0, 0.05)]
    assert goodput_interval(same, 0.9) == (10, 40)


def test_the_interval_holds_the_searchs_own_answer_when_a_later_probe_overturned_a_pass():
    """Seen on the CPU: a pass shown at 66.8 req/s, then a fail at 66.8 (not shown below), so the search answered 64;
    the interval without the answer ran 66.8-76.1 and left it out."""
    probes = [probe(32, 0.95, 1.0), probe(64, 0.93, 1.0), probe(66.8, 0.91, 1.0), probe(76.1, 0.0, 0.05),
              probe(66.8, 0.7, 0.95)]
    assert goodput_interval(probes, 0.9) == (66.8, 76.1)
    assert goodput_interval(probes, 0.9, answer=64) == (64, 76.1)
    below_it = [probe(10, 0.95, 1.0), probe(20, 0.2, 0.5), probe(30, 0.8, 0.97)]   # a fail shown below the answer
    assert goodput_interval(below_it, 0.9, answer=30) == (10, 30)


def test_a_rate_shown_both_ways_widens_the_interval_past_it_even_above_the_answer():
    """Seen on an H100: 4.91 req/s failed 3/33, its repeat passed 98/100; the answer stayed 4.5 (the bracket ignores
    repeats). The interval must run past 4.91 to the next fail shown, not stop at the contradicted one."""
    probes = [probe(4.5, 0.93, 1.0), probe(4.91, 0.0, 0.3), probe(5.35, 0.5, 0.85), probe(9.0, 0.0, 0.1),
              probe(4.91, 0.93, 1.0)]
    assert goodput_interval(probes, 0.9, answer=4.5) == (4.5, 5.35)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([5.0, 10.0, 20.0, 40.0]), st.booleans(), st.floats(0, 1), st.floats(0, 1),
                          st.booleans()), min_size=1, max_size=8))
def test_any_probes_give_an_interval_that_holds_the_answer_the_bracket_gives(drawn):
    from ctxkit.load.search import bracket
    probes = []
    for rate, passed, a, b, scout in drawn:
        p = probe(rate, min(a, b), max(a, b), scout=scout)
        p.verdict = "pass" if passed else "fail"
        probes.append(p)
    answer = bracket(probes)[0] or 0.0
    low, high = goodput_interval(probes, 0.9, answer)
    assert low <= answer and (high is None or answer <= high)


def test_a_probe_whose_queue_was_still_growing_never_shows_a_rate_above_the_goodput():
    from ctxkit.load.search import RISING
    grew = probe(30, 0.92, 0.99)
    grew.decided_by = RISING
    assert goodput_interval([probe(10, 0.95, 1.0), grew], 0.9) == (10, None)


def test_a_converged_search_measures_its_ends_again_in_full_and_leaves_the_bracket_alone():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from test_goodput_search import MU, TARGET, K, S, items
    from virtual_queue import VirtualQueue

    from ctxkit.collectors.latency import SLO
    from ctxkit.load.search import SearchPolicy, search
    queue = VirtualQueue(K, 1000 / MU, seed=4)
    policy = SearchPolicy(target=TARGET, start_rate=20.0, min_requests=300, max_requests=600, warmup_s=6.0,
                          min_duration_s=4.0, max_probes=30, seed=4)
    with queue.patched():
        res = search(queue, items(4), SLO(ttft_ms=1000 * S), policy, timeout_s=30)
    assert res.converged and res.repeat is not None
    again = [p for p in res.probes if p.repeat]
    assert len(again) == 2 and res.probes[-2:] == again and {p.rate for p in again} == {res.low, res.high}
    assert not any(p.scout for p in again)
    from ctxkit.load.search import bracket
    assert bracket(res.probes) == (res.low, res.high)   # the repeats leave the bracket as the search left it
    assert res.repeat == "repeated" or res.repeat.startswith("not repeatable at this probe size")


def test_ends_whose_verdicts_flip_are_called_not_repeatable_with_the_size_that_would_settle_it(monkeypatch):
    from ctxkit.load import search as search_mod
    first = [Probe(0, 10.0, verdict="pass", attainment=0.92, decided=300, n_eff=100.0),
             Probe(1, 11.0, verdict="fail", attainment=0.88, decided=300, n_eff=100.0)]
    again = {10.0: Probe(2, 10.0, verdict="fail", attainment=0.89, decided=300, n_eff=60.0),
             11.0: Probe(3, 11.0, verdict="fail", attainment=0.8, decided=300, n_eff=60.0)}
    order: list[float] = []
    monkeypatch.setattr(search_mod, "run_probe", lambda backend, index, rate, *a, **k: order.append(rate) or
                        again[rate])
    probes = list(first)
    text = search_mod.repeat_ends(None, None, None, search_mod.SearchPolicy(target=0.9), probes, (10.0, 11.0),
                                  timeout_s=1)
    assert sorted(order) == [10.0, 11.0] and probes[2:] == [again[r] for r in order]
    assert text.startswith("not repeatable at this probe size: 10 req/s pass then fail")
    # the margin 0.01 at 0.89 needs n_eff = (1.833 + 0.842)^2 x 0.89 x 0.11 / 0.01^2 = 7004 (one-sided 95%, 80%
    # power), at 5 requests an effective one
    assert "settling it takes probes of about 35020 scored requests" in text


def test_settle_waits_for_idle_gauges_and_says_when_the_servers_never_got_there(monkeypatch):
    from ctxkit.load import search as search_mod

    class Clock:
        now = 0.0

        def monotonic(self):
            return self.now

        def sleep(self, s):
            self.now += s

    from ctxkit.backends import ServingBackend

    class Backend(ServingBackend):
        def __init__(self, texts):
            self.texts = iter(texts)

        def metric_sources(self):
            return {"s": lambda: next(self.texts)}

    busy = "vllm:num_requests_running 2\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.4\n"
    held = "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.4\n"
    idle = "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.0\n"
    monkeypatch.setattr(search_mod, "time", Clock())
    got = search_mod.settle(Backend([busy, busy, held, idle]), limit_s=10)
    assert not got.busy and abs(got.waited_s - 0.6) < 1e-9          # KV cache still held counts as busy
    got = search_mod.settle(Backend([busy] * 100), limit_s=1.0)
    assert got.busy and got.waited_s >= 1.0


def fake_probes(capacity: float, keeps_pace: int, monkeypatch) -> list[tuple[float, int]]:
    """search() over a stand-in probe runner: a rate passes below `capacity`, and one client process keeps the pace
    up to `keeps_pace` req/s (2 processes twice that, ...); a probe the client paced passes whatever its rate (its
    offered load was below the rate: it flatters the servers). Returns the (rate, workers) of every probe run."""
    from ctxkit.load import search as search_mod
    ran: list[tuple[float, int]] = []

    def run_probe(backend, index, rate, *a, workers=1, **k):
        ran.append((rate, workers))
        paced = rate > keeps_pace * workers
        passed = rate < capacity or paced
        return Probe(index, rate, workers=workers, verdict="pass" if passed else "fail", decided=300, met=300,
                     attainment=0.99 if passed else 0.5, attainment_low=0.95 if passed else 0.4,
                     attainment_high=1.0 if passed else 0.6, n_eff=100.0, client_lagged=paced,
                     send_lag_p99_ms=500.0 if paced else 1.0)
    monkeypatch.setattr(search_mod, "run_probe", run_probe)
    return ran


def test_a_probe_the_client_paced_is_measured_again_from_more_processes_and_never_scored(monkeypatch):
    """One process keeps the pace up to 5 req/s, capacity is 12: the probe at 8 falls behind, is measured again
    from two processes (which keep up to 10), and the search goes on from two, then four; no lagged probe is in the
    bracket, and the answer is not a lower bound."""
    from ctxkit.load.search import SearchPolicy, bracket, search
    ran = fake_probes(12.0, 5, monkeypatch)
    res = search(None, None, None, SearchPolicy(start_rate=1.0, scout_requests=None, max_workers=8, max_probes=30,
                                                repeat_check=False), timeout_s=1)
    assert (8.0, 1) in ran and ran[ran.index((8.0, 1)) + 1] == (8.0, 2)
    assert (16.0, 2) in ran and ran[ran.index((16.0, 2)) + 1] == (16.0, 4)
    assert not res.client_limited and res.converged and res.low < 12.0 <= res.high
    assert all(not p.client_lagged for p in res.probes if p.rate in bracket(res.probes))
    assert res.interval_low < 12.0


def test_where_no_number_of_processes_keeps_the_pace_the_search_stops_with_a_lower_bound(monkeypatch):
    """Two processes at most (max_workers 2), each keeping 3 req/s: at 4 req/s one lags and two keep up; at 8 two
    lag, and again: the search stops there, its goodput the last rate scored (4) and marked a lower bound."""
    from ctxkit.load.search import SearchPolicy, search
    ran = fake_probes(12.0, 3, monkeypatch)
    res = search(None, None, None, SearchPolicy(start_rate=1.0, scout_requests=None, max_workers=2,
                                                repeat_check=False), timeout_s=1)
    assert ran[-4:] == [(4.0, 1), (4.0, 2), (8.0, 2), (8.0, 2)]
    assert res.client_limited and res.goodput == 4.0 and "lower bound" in res.stopped_because
    assert res.summary()["client_limited"] is True


def test_a_repeat_the_client_paced_says_so_instead_of_a_verdict(monkeypatch):
    from ctxkit.load import search as search_mod
    first = [Probe(0, 10.0, verdict="pass"), Probe(1, 11.0, verdict="fail")]
    again = {10.0: Probe(2, 10.0, verdict="fail", client_lagged=True), 11.0: Probe(3, 11.0, verdict="fail")}
    monkeypatch.setattr(search_mod, "run_probe", lambda backend, index, rate, *a, **k: again[rate])
    text = search_mod.repeat_ends(None, None, None, search_mod.SearchPolicy(target=0.9), list(first), (10.0, 11.0),
                                  timeout_s=1)
    assert text == "not measured again: the client fell behind its schedule at 10 req/s"


def test_a_probe_the_client_paced_sets_neither_end_of_the_bracket():
    """A paced pass at 10 (its offered load was lower) and a paced fail at 9 (a client that falls behind also turns
    a probe's latency): the bracket rests on the probes that kept their schedule, 8 and 12."""
    from ctxkit.load.search import bracket
    probes = [Probe(0, 8.0, verdict="pass"), Probe(1, 12.0, verdict="fail"),
              Probe(2, 10.0, verdict="pass", client_lagged=True), Probe(3, 9.0, verdict="fail", client_lagged=True)]
    assert bracket(probes) == (8.0, 12.0)


def test_a_goodput_outside_its_own_interval_is_said_to_be():
    """The bracket reads each rate's last probe, the interval every probe: a fail at 16 that a repeat then passed
    leaves the goodput at 14.7 and the interval from 16 (as an E4 CPU run had it): the text says they part."""
    from ctxkit.experiments.e4_goodput import interval_text
    row = {"goodput_per_device": 7.34, "per_device_low": 7.34, "per_device_high": 8.0,
           "per_device_interval_low": 8.0, "per_device_interval_high": None}
    assert interval_text(row).endswith("the goodput lies outside its own interval: its probes disagree at this "
                                       "size (see the repeat check)")
    inside = row | {"per_device_interval_low": 7.0, "per_device_interval_high": 8.0}
    assert interval_text(inside) == "90% interval 7-8, bracket 7.34-8"
