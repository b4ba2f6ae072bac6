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


def test_probes_that_contradict_each_other_widen_the_interval_to_span_both():
    probes = [probe(10, 0.95, 1.0), probe(30, 0.92, 0.99), probe(25, 0.5, 0.8), probe(40, 0.0, 0.05)]
    assert goodput_interval(probes, 0.9) == (25, 30)
