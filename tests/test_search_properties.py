"""Properties of the load layer's pure functions, over generated inputs: the next rate stays inside its bracket,
a split schedule is a partition of the one schedule, arrival offsets never go back in time, and pacing a trace keeps
its order."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ctxkit.load.arrivals import Arrivals
from ctxkit.load.search import Probe, SearchPolicy, next_rate, paced_to
from ctxkit.load.workers import split
from ctxkit.load.workloads import WorkItem

rates = st.floats(0.1, 1000, allow_nan=False)


def items(n: int, arrival_ms: list[float] | None = None) -> list[WorkItem]:
    return [WorkItem(f"r{i}", [1, 2], 4, arrival_ms=None if arrival_ms is None else arrival_ms[i]) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(low=rates, ratio=st.floats(1.01, 64), a_lo=st.floats(0, 1), a_hi=st.floats(0, 1),
       verdicts=st.lists(st.sampled_from(["pass", "fail"]), max_size=6), tolerance=st.floats(0.01, 0.5))
def test_the_next_rate_lies_strictly_inside_its_bracket(low, ratio, a_lo, a_hi, verdicts, tolerance):
    high = low * ratio
    probes = [Probe(0, low, attainment=a_lo, verdict="pass"), Probe(1, high, attainment=a_hi, verdict="fail")]
    probes += [Probe(2 + i, math.sqrt(low * high), attainment=0.9, verdict=v) for i, v in enumerate(verdicts)]
    rate = next_rate(probes, low, high, SearchPolicy(tolerance=tolerance))
    assert low < rate < high


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 60), workers=st.integers(1, 6), rate=rates, seed=st.integers(0, 2**31),
       kind=st.sampled_from(["poisson", "gamma", "constant"]))
def test_a_split_schedule_is_the_one_schedule_partitioned(n, workers, rate, seed, kind):
    work = items(n)
    arrivals = Arrivals(kind, rate, burstiness=0.5, seed=seed)
    due = dict(zip((it.request_id for it in work), arrivals.offsets_s(work)))
    parts = split(work, arrivals, workers)
    sent = [it for share, _ in parts for it in share]
    assert sorted(it.request_id for it in sent) == sorted(due)                  # every request once
    for share, worker_arrivals in parts:
        assert worker_arrivals.kind == "trace"
        for it, off in zip(share, worker_arrivals.offsets_s(share)):
            assert math.isclose(off, due[it.request_id], abs_tol=1e-9)          # at its time in the one schedule


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 200), rate=rates, seed=st.integers(0, 2**31),
       kind=st.sampled_from(["poisson", "gamma", "constant"]), burstiness=st.floats(0.1, 10))
def test_arrival_offsets_start_at_zero_or_later_and_never_go_back(n, rate, seed, kind, burstiness):
    offsets = Arrivals(kind, rate, burstiness=burstiness, seed=seed).offsets_s(items(n))
    assert len(offsets) == n and offsets[0] >= 0
    assert all(b >= a for a, b in zip(offsets, offsets[1:]))


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.floats(0, 5000), min_size=1, max_size=50), rate=rates)
def test_pacing_a_trace_keeps_its_order_and_reaches_the_rate(gaps, rate):
    stamps = [1000.0]
    for g in gaps:
        stamps.append(stamps[-1] + g)
    if stamps[-1] == stamps[0]:
        return                                            # one timestamp: refused (test_trace_search)
    work = items(len(stamps), stamps)
    paced_to(work, rate)
    paced = [it.arrival_ms for it in work]
    assert paced[0] == 0 and all(b >= a for a, b in zip(paced, paced[1:]))
    assert math.isclose((len(work) - 1) / (paced[-1] / 1000.0), rate, rel_tol=1e-6)


def test_a_server_that_died_during_a_probe_ends_the_search_instead_of_scoring_its_lost_requests(monkeypatch):
    """A decode engine died mid-search on the CPU and the search went on, scoring 'unreachable' as SLO misses down
    to a goodput of 0. Now the probe asks the backend after its load and raises."""
    import pytest

    from ctxkit.backends import ServingBackend
    from ctxkit.backends.base import ServerDied
    from ctxkit.collectors.latency import SLO
    from ctxkit.load import search as search_mod
    from ctxkit.records import DISCONNECT, RequestRecord

    class Dead(ServingBackend):
        def alive(self) -> bool:
            return False

        def death_note(self) -> str:
            return "decode exit code 1"

    def lost(base_url, model, items, arrivals, **_):
        return [RequestRecord(it.request_id, 2, 4, status=DISCONNECT) for it in items]

    monkeypatch.setattr(search_mod, "run_load", lost)
    policy = SearchPolicy(min_requests=10, max_requests=10, warmup_requests=0, warmup_s=0, min_duration_s=0)
    with pytest.raises(ServerDied, match="decode exit code 1"):
        search_mod.run_probe(Dead(), 0, 5.0, lambda p, b, n: items(n), SLO(ttft_ms=100), policy, timeout_s=5)
