"""Goodput search: the highest Poisson request rate a running backend serves with SLO attainment >= a target.

DistServe's question, asked of live servers. From a start rate the rate doubles until a probe fails (or halves until
one passes), then bisects (geometric midpoint) until the highest passing rate and the lowest failing rate are within
`tolerance` of each other. Each probe sends fresh prompts on a Poisson schedule and decides from a 95% Wilson
interval on its attainment: pass or fail only when the interval lies on one side of the target; an undecided probe is
extended with more requests, up to a cap, then decided by its point estimate (and marked so). A probe stops early,
cancelling what is in flight, once its certain misses exceed what the target allows at the cap: a rate far above
capacity never builds an unbounded backlog. Caps on probes and wall time bound a search.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ctxkit.backends import ServingBackend
from ctxkit.collectors import attainment as att
from ctxkit.collectors import replay
from ctxkit.collectors.latency import SLO, RequestLatency, request_latency
from ctxkit.collectors.server_metrics import ServerMetricsCollector, parse, value
from ctxkit.load.arrivals import Arrivals, run_load
from ctxkit.load.engine import check_alive
from ctxkit.load.workers import run_load_workers
from ctxkit.load.workloads import WorkItem, WorkloadError, build_workload
from ctxkit.models import ModelCard
from ctxkit.params import SearchParams, WorkloadParams
from ctxkit.records import CANCELLED, RequestRecord

# fresh prompts for a probe: (probe index, batch index, number of requests) -> items
ItemsFn = Callable[[int, int, int], list[WorkItem]]
# a probe's decided_by when it is not in steady state (see not_steady): which of the two signs it showed
RISING = "misses rising through the probe (not in steady state)"
CLIMBING = "latency climbing through the probe (not in steady state)"
NOT_STEADY = (RISING, CLIMBING)
Z80 = 0.8416212335729143       # standard normal, one-sided 80%: the power settling_size plans for


@dataclass(frozen=True)
class SearchPolicy:
    target: float = 0.9                  # SLO attainment a rate must reach
    start_rate: float = 1.0              # req/s of the first probe
    tolerance: float = 0.05              # stop when lowest failing / highest passing <= 1 + tolerance
    min_requests: int = 40               # a probe's first batch
    max_requests: int = 160              # an undecided probe is extended up to this many requests
    max_probes: int = 12                 # per search
    max_wall_s: float = 600.0            # per search
    drain_s: float = 30.0                # wait at most this long for requests in flight after the last send
    warmup_requests: int = 20            # each probe's stream starts with this many unscored requests, so the
                                         # servers' queues are in steady state when scoring starts
    warmup_s: float = 0.0                # ... and with at least this many seconds of them: a queue relaxes in
                                         # time, not in requests (a fixed count is long at low rates, short at
                                         # high ones, where a transient from the empty queue looks like capacity)
    min_duration_s: float = 0.0          # a probe scores requests for at least this long before a verdict stops it:
                                         # at a high rate, min_requests go by before a growing queue shows
    mode: str = "joint"                  # joint (per-request, DistServe) | percentile (p<target> of each metric)
    lag_bound_ms: float = 100.0          # p99 send lag above which a probe's load was paced by the client, not
                                         # its schedule: its offered rate is below the nominal one (flagged)
    arrival: str = "poisson"             # poisson | trace (the items' own timestamps, scaled to the rate)
    metrics_interval_s: Optional[float] = None   # scrape the servers' gauges this often through a probe
    scout_requests: Optional[int] = 40   # a probe before the bracket forms (doubling or halving) only picks the
                                         # direction: it may pass on a Wilson verdict after this many decided,
                                         # before min_requests and min_duration_s (see StopRule). None: none do
    scout_warmup_share: float = 1 / 3    # ... and warms up for this share of warmup_s (Poisson arrivals): its
                                         # pass, or a fail on a queue still filling, is measured again in full at
                                         # its rate before it can end the bracket (see warmup, run_probe)
    repeat_check: bool = True            # a converged search measures its bracket's two ends once more, in random
                                         # order, and says whether their verdicts repeat (search.repeat_ends)
    workers: int = 1                     # client processes a probe sends from (ctxkit.load.workers) ...
    max_workers: Optional[int] = None    # ... and at most, after probes the client paced: None, half this host's
                                         # cores (the other half for the servers' own processes and the scrapers)
    seed: int = 0

    @classmethod
    def of(cls, params: SearchParams, seed: int) -> "SearchPolicy":
        """The policy the checked parameters describe (E4 and `ctxkit bench --search rate` alike)."""
        return cls(**params.model_dump() | {"warmup_s": params.warmup_seconds(),
                                            "min_duration_s": params.min_duration_seconds()}, seed=seed)

    def planned(self, rate: float) -> int:
        """Scored requests a probe at `rate` is planned to send: enough to cover min_duration_s, at least
        max_requests."""
        return max(self.max_requests, math.ceil(rate * self.min_duration_s * 1.2))

    def warmup(self, rate: float, scout: bool = False) -> int:
        """Unscored requests at the head of a probe at `rate`; a scout's cover scout_warmup_share of warmup_s. A
        scout far below capacity reaches steady state at once; just above it, a full warmup does not protect a
        scout either (its early pass on few requests is a sample of a queue that takes minutes to fill there), and
        the cost falls on every scout: benchmarks/goodput_search_cost.py measures both sides."""
        share = self.scout_warmup_share if scout and self.short_scout_warmup() else 1.0
        return max(self.warmup_requests, math.ceil(rate * self.warmup_s * share))

    def short_scout_warmup(self) -> bool:
        """Whether scouts warm up for less than warmup_s. Not on a trace: its window holds so many rows, and the
        full probe that must confirm a scout's pass at its rate needs the full warmup's."""
        return self.scout_requests is not None and self.scout_warmup_share < 1 and self.warmup_s > 0 and \
            self.arrival == "poisson"

    def scouts(self) -> bool:
        """Whether a scouting probe can cost less than a full one (see scout_requests, scout_warmup_share)."""
        return self.scout_requests is not None and (self.scout_requests < self.min_requests or self.min_duration_s > 0
                                                    or self.short_scout_warmup())

    def most_workers(self) -> int:
        return max(self.workers, self.max_workers or (os.cpu_count() or 2) // 2, 1)

    def allowed_misses(self, planned: int) -> int:
        """Misses beyond which a probe of `planned` scored requests fails whatever its remaining requests do."""
        return math.floor((1 - self.target) * planned + 1e-9)


@dataclass
class Probe:
    index: int
    rate: float
    planned: int = 0                     # requests its batches were to send
    warmup: int = 0                      # unscored requests at the head of its stream (a scout's are fewer)
    sent: int = 0
    decided: int = 0
    met: int = 0
    missed: int = 0
    undecided: int = 0
    attainment: Optional[float] = None
    wilson_low: float = 0.0
    wilson_high: float = 1.0
    attainment_low: float = 0.0          # one-sided 95% bounds on attainment that count the requests' dependence
    attainment_high: float = 1.0         # (attainment.batch_means); the goodput interval rests on these
    n_eff: float = 0.0                   # the scored outcomes are as informative as this many independent ones
    verdict: str = "undecided"
    decided_by: str = ""
    early_stop: bool = False             # cut off on misses: what was in flight was cancelled (the backlog)
    backlog: int = 0                     # requests in flight (cancelled) when the probe stopped early
    send_lag_p99_ms: Optional[float] = None
    offered_rate: Optional[float] = None # scored requests per second between the first and the last scored send
    client_lagged: bool = False          # p99 send lag over the policy's bound: the client set the pace
    wall_s: float = 0.0
    scout: bool = False                  # its verdict is a scout's: it passed early (the scout rule, StopRule), or
                                         # passed or was found not steady after a scout's shorter warmup
    settle_s: float = 0.0                # waited before it for the servers to be idle (search.settle)
    started_busy: bool = False           # ... and they still were when the wait's bound ran out
    repeat: bool = False                 # one of the search's closing repeat probes (search.repeat_check)
    workers: int = 1                     # client processes it was sent from
    misses_by_cause: dict[str, int] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)   # each server's metric deltas over the probe
    percentile: dict[str, Any] = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    speedup: Optional[float] = None      # trace arrivals: the probe's rate / the trace's own over the same rows
    replay: dict[str, Any] = field(default_factory=dict)   # trace arrivals: ctxkit.collectors.replay.fidelity
    timeline: list[dict[str, Any]] = field(default_factory=list, repr=False)   # the servers' gauges through it

    def row(self) -> dict[str, Any]:
        """The probe as one table row (no records)."""
        keep = ("index", "rate", "warmup", "planned", "sent", "decided", "met", "missed", "undecided", "attainment",
                "wilson_low", "wilson_high", "attainment_low", "attainment_high", "n_eff", "verdict", "decided_by", "early_stop", "backlog", "send_lag_p99_ms",
                "offered_rate", "client_lagged", "wall_s", "speedup", "scout", "settle_s", "started_busy", "repeat",
                "workers")
        return {k: getattr(self, k) for k in keep} | {f"missed_{k}": v for k, v in self.misses_by_cause.items()}


@dataclass
class SearchResult:
    goodput: float                       # highest passing rate (0 when none passed)
    low: Optional[float]                 # the bracket, the search's resolution: the highest passing rate
    high: Optional[float]                # ... and the lowest failing rate above it
    converged: bool
    stopped_because: str
    probes: list[Probe]
    interval_low: float = 0.0            # the 90% confidence interval on the goodput (goodput_interval)
    interval_high: Optional[float] = None   # None: no probe showed a rate above the goodput
    repeat: Optional[str] = None         # the closing repeat check (repeat_ends); None: not run
    client_limited: bool = False         # it stopped where no number of client processes kept the pace: the
                                         # goodput is a lower bound

    def summary(self) -> dict[str, Any]:
        return {"goodput": self.goodput, "low": self.low, "high": self.high, "interval_low": self.interval_low,
                "interval_high": self.interval_high, "repeat": self.repeat, "client_limited": self.client_limited,
                "converged": self.converged,
                "stopped_because": self.stopped_because, "probes": len(self.probes)}


def goodput_interval(probes: list[Probe], target: float,
                     answer: Optional[float] = None) -> tuple[float, Optional[float]]:
    """A confidence interval on the goodput, by inverting each probe's test: attainment falls as the rate rises, so a
    probe whose lower bound on attainment (one-sided 95%, counting dependence: Probe.attainment_low) clears the
    target shows that the goodput is at least its rate, and one whose upper bound is below the target that the
    goodput is below its rate. [the highest such lower rate (0 if none), the lowest such upper rate (None if
    none)]: each end errs with about 5% (more where several probes sit just beyond it), 90% in all, validated on
    the M/M/8 queue (benchmarks/goodput_search_cost.py). Left out: probes the client paced (their offered rate is
    not their rate), a scout's pass (a shorter warmup flatters a queue; its fail stands), and a probe found not in
    steady state (its queue was still growing). Where a probe shown above the target sits at or above one shown
    below it, the two contradict each other (probes too short for the queue's excursions): the contradicted ones
    are set aside and the interval runs from the highest rate shown above below every rate shown below, to the
    lowest shown below above every rate shown above: wider, never narrower. With the search's `answer` (its highest
    rate whose last probe passed), the interval holds it: an end that the probes put on the wrong side of the answer
    (a pass shown above it that a later probe at its rate overturned, say) widens to it. Contradictions are found
    among all the probes first, so a rate shown both ways widens the interval past it."""
    above = [p.rate for p in probes if not p.client_lagged and not p.scout and p.decided_by not in NOT_STEADY
             and p.attainment_low >= target]
    below = [p.rate for p in probes if not p.client_lagged and p.attainment_high < target]
    if above and below and max(above) >= min(below):
        low, high = max([r for r in above if r < min(below)], default=0.0), \
            min([r for r in below if r > max(above)], default=None)
    else:
        low, high = max(above, default=0.0), min(below, default=None)
    if answer is None:
        return low, high
    return min(low, answer), None if high is None else max(high, answer)


def _send_lag_p99(records: list[RequestRecord]) -> Optional[float]:
    scored = [r for r in records if not r.warmup]     # the probe's own load, as offered_rate counts it
    lags = [lat.client_lag_ms for lat in map(request_latency, scored) if lat.client_lag_ms is not None]
    return float(np.percentile(lags, 99)) if lags else None


def offered_rate(records: list[RequestRecord]) -> Optional[float]:
    """Scored requests a second as sent: (n - 1) over the time from the first scored send to the last. Beside the
    nominal rate it shows a client that fell behind its schedule."""
    sends = sorted(r.t_send_ns for r in records if not r.warmup and r.t_send_ns)
    span_s = (sends[-1] - sends[0]) / 1e9 if len(sends) >= 2 else 0.0
    return (len(sends) - 1) / span_s if span_s > 0 else None


def rising(records: list[RequestRecord], slo: SLO, target: Optional[float] = None,
           latency_of: att.LatencyFn = request_latency) -> bool:
    """The probe is not in steady state (not_steady names the sign)."""
    return not_steady(records, slo, target, latency_of) is not None


def not_steady(records: list[RequestRecord], slo: SLO, target: Optional[float] = None,
               latency_of: att.LatencyFn = request_latency) -> Optional[str]:
    """Whether the probe is not in steady state, and by which sign (None when it is). CLIMBING: latency climbs (the
    last third's median TTFT or TPOT is over 1.5 times the first third's and over half its objective). RISING:
    misses rise (the second half of its scored requests, in send order, misses significantly more often than the
    first: two-proportion z > 2, and, given the `target`, its share met is below it: a queue's misses come in
    bursts, so halves that differ but both meet the target are noise, not growth). A queue that is still growing is not
    a rate the servers sustain, whatever the share met so far: a short probe above capacity can look fine."""
    scored = sorted((r for r in records if not r.warmup), key=lambda r: r.t_send_ns)
    if _latency_climbs(scored, slo, latency_of):
        return CLIMBING           # said apart from rising misses: such a probe may have met every request so far
    outs = [att.outcome(r, slo, latency_of=latency_of) for r in scored]
    halves = [[o for o in outs[:len(outs) // 2] if o.met is not None],
              [o for o in outs[len(outs) // 2:] if o.met is not None]]
    if min(len(h) for h in halves) < 10:
        return None
    (n1, m1), (n2, m2) = [(len(h), sum(1 for o in h if not o.met)) for h in halves]
    p = (m1 + m2) / (n1 + n2)
    if p in (0.0, 1.0):
        return None
    z = (m2 / n2 - m1 / n1) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return RISING if z > 2.0 and (target is None or 1 - m2 / n2 < target) else None


def _latency_climbs(scored: list[RequestRecord], slo: SLO, latency_of: att.LatencyFn = request_latency) -> bool:
    lats = [latency_of(r) for r in scored if r.ok]
    third = len(lats) // 3
    if third < 5:
        return False
    for name, objective in (("ttft_ms", slo.ttft_ms), ("tpot_ms", slo.tpot_ms)):
        first = [getattr(x, name) for x in lats[:third] if getattr(x, name) is not None]
        last = [getattr(x, name) for x in lats[-third:] if getattr(x, name) is not None]
        if objective and first and last:
            head, tail = float(np.median(first)), float(np.median(last))
            if tail > 1.5 * head and tail > 0.5 * objective:
                return True
    return False


class StopRule:
    """When a probe's single stream ends: cancel once its certain misses exceed what the target allows; stop
    sending (and let what is in flight finish) once at least min_requests are decided over min_duration_s and the
    Wilson interval has a verdict, unless misses are rising (then it goes on, up to max_requests). A scout also
    stops on a pass after scout_requests decided: far below capacity that is all a direction needs. Never on an
    early fail: near capacity misses come in bursts, and a short window that caught one would set the bracket's
    fail end below capacity (a scout at 0.9 x capacity on the simulated M/M/8 queue did, where the full probe on
    the same stream passed); it goes on as a full probe instead, or is cut off above capacity by its misses.

    The client asks before every send, with the finished records (in completion order: the list only grows) and
    those in flight. A finished record is counted once, when it first appears, and the steady-state check reruns
    only once the decided count has grown by a fiftieth: a call costs what arrived since the last one and what is in
    flight, not the whole probe so far (which grew with the probe and, at hundreds of requests a second, held the
    client's later sends back). While misses rise the check reruns at each new finished request, as before.
    `unscored`: the request ids of the probe's warmup, marked as they arrive."""

    def __init__(self, slo: SLO, policy: SearchPolicy, planned: int, scout: bool = False,
                 unscored: frozenset[str] = frozenset()) -> None:
        self.slo, self.policy, self.planned, self.scout, self.unscored = slo, policy, planned, scout, unscored
        self.by_scout = False              # it stopped short of a full probe's floors: its verdict is a scout's
        self.counted = self.met = self.missed = 0
        self.first_send: Optional[int] = None
        self._rising, self._rising_at = False, -1
        self._latencies: dict[int, RequestLatency] = {}   # finished records' (final once finished), by id

    def _latency(self, rec: RequestRecord) -> RequestLatency:
        lat = self._latencies.get(id(rec))
        if lat is None:
            lat = self._latencies[id(rec)] = request_latency(rec)
        return lat

    def _count(self, done: list[RequestRecord]) -> None:
        for rec in done[self.counted:]:
            rec.warmup = rec.request_id in self.unscored
            if rec.warmup:
                continue
            if rec.t_send_ns:
                self.first_send = min(self.first_send or rec.t_send_ns, rec.t_send_ns)
            met = att.outcome(rec, self.slo, latency_of=self._latency).met
            self.met += met is True
            self.missed += met is False
        self.counted = len(done)

    def _steady(self, done: list[RequestRecord]) -> bool:
        """Not rising, rechecked once the count grew by a fiftieth; while the last check said rising, at every new
        finished request (a stale "rising" must not hold a drain back)."""
        decided = self.met + self.missed
        grown = decided - self._rising_at
        if self._rising_at < 0 or grown >= max(1, decided // 50) or (self._rising and grown > 0):
            self._rising, self._rising_at = rising(done, self.slo, self.policy.target, self._latency), decided
        return not self._rising

    def __call__(self, done: list[RequestRecord], live: list[RequestRecord], now_ns: int) -> Optional[str]:
        self._count(done)
        met, missed, first = self.met, self.missed, self.first_send
        for rec in live:
            rec.warmup = rec.request_id in self.unscored
            if not rec.warmup:
                missed += att.outcome(rec, self.slo, now_ns).met is False
                first = min(first or rec.t_send_ns, rec.t_send_ns) if rec.t_send_ns else first
        policy = self.policy
        if missed > policy.allowed_misses(self.planned):
            return "cancel"
        if policy.mode != "joint":
            return None
        decided = met + missed
        long_enough = first is not None and (now_ns - first) / 1e9 >= policy.min_duration_s
        verdict = att.verdict(met, decided, policy.target)
        full = long_enough and decided >= policy.min_requests and verdict != "undecided"
        early = self.scout and decided >= (policy.scout_requests or policy.min_requests) and verdict == "pass"
        if (full or early) and self._steady(done):
            self.by_scout = not full
            return "drain"
        return None


def run_probe(backend: ServingBackend, index: int, rate: float, items_fn: ItemsFn, slo: SLO, policy: SearchPolicy,
              *, timeout_s: float, on_records: Optional[Callable[[list[RequestRecord]], None]] = None,
              scout: bool = False, workers: int = 1) -> Probe:
    """One probe at `rate`: one Poisson stream of policy.warmup(rate) unscored requests, then up to max_requests scored
    ones, ended early by the rule above; its verdict from everything that finished. `scout`: it may pass early
    (StopRule); `probe.scout` says whether it did. `workers` > 1: sent from that many client processes, the rule
    asked in this one (ctxkit.load.workers)."""
    scouting = scout and policy.scouts()
    probe, t0 = Probe(index, rate, workers=workers), time.monotonic()
    settled = settle(backend, policy.drain_s)
    probe.settle_s, probe.started_busy = settled.waited_s, settled.busy
    probe.planned = policy.planned(rate)
    n_warm = probe.warmup = policy.warmup(rate, scouting)
    items = items_fn(index, 0, n_warm + probe.planned)
    unscored = {it.request_id for it in items[:n_warm]}

    def mark(recs: list[RequestRecord]) -> list[RequestRecord]:
        for rec in recs:
            rec.warmup = rec.request_id in unscored
        return recs

    if policy.arrival == "trace":
        probe.planned = len(items) - n_warm          # a trace window may hold fewer rows than planned
        if probe.planned < policy.min_requests:
            raise TraceWindowShort(f"the trace window holds {len(items)} rows: a probe at {rate:.3g} req/s needs "
                                f"{n_warm} unscored + at least {policy.min_requests} scored (search.min_requests)")
        probe.speedup = paced_to(items, rate)
        arrivals = Arrivals("trace")
    else:
        arrivals = Arrivals("poisson", rate, seed=policy.seed * 100_003 + index * 101)
    rule = StopRule(slo, policy, probe.planned, scouting, frozenset(unscored))
    # after the trace window's check above: a probe refused there leaves no scraping thread behind
    collectors = [ServerMetricsCollector(name, fetch, policy.metrics_interval_s).start()
                  for name, fetch in backend.metric_sources().items()]
    try:
        if workers > 1:
            records = run_load_workers(backend.base_url, backend.model, items, arrivals, workers=workers,
                                       timeout_s=timeout_s, stop=rule, drain_s=policy.drain_s)
        else:
            records = run_load(backend.base_url, backend.model, items, arrivals, timeout_s=timeout_s, stop=rule,
                               drain_s=policy.drain_s)
    except BaseException:
        for c in collectors:
            c.stop()
        raise
    for rec in mark(records):
        rec.tags.update({"probe": index, "rate": rate})
    probe.records = records
    if on_records:
        on_records(records)
    _score(probe, slo, policy)
    # what was in flight may still turn a scout's early pass into a fail (search()). After a scout's shorter
    # warmup, a pass in full is a scout's too (a young queue flatters), and so is a fail on a queue found not steady:
    # latency still climbing from the empty queue there is the warmup's to absorb, not a verdict on the rate. A
    # plain fail stands: a young queue only flatters. search() measures such a rate again in full.
    short = n_warm < policy.warmup(rate)
    probe.scout = rule.by_scout or (short and (probe.verdict == "pass" or probe.decided_by in NOT_STEADY))
    probe.server = {c.name: c.stop() for c in collectors}
    probe.timeline = [row for c in collectors for row in c.timeline]
    check_alive(backend, records)       # a server that died ends the search: its misses are not the rate's
    if policy.arrival == "trace":                 # over the whole probe: its server counters cover the warmup too
        every = [dataclasses.replace(r, warmup=False) for r in records]
        probe.replay = replay.fidelity(items, every, probe.server, "trace")
    probe.wall_s = time.monotonic() - t0
    return probe


def trace_window_fits(workload: WorkloadParams, search: SearchParams, card: ModelCard, max_model_len: int,
                      seed: int) -> None:
    """The first probe's rows: its unscored head at the start rate (warmup_requests, or warmup_s of them: scouts
    over a trace warm up in full) and min_requests scored ones. (Later probes at higher rates may need more: the
    search stops there, saying so.)"""
    rows = len(build_workload(workload, card, max_model_len, seed, count=10**9))
    head = max(search.warmup_requests, math.ceil(search.start_rate * search.warmup_seconds()))
    if rows < head + search.min_requests:
        raise WorkloadError(f"the trace window holds {rows} rows; a probe needs at least {head + search.min_requests} "
                            f"({head} unscored at {search.start_rate:g} req/s (search.warmup_requests, "
                            f"search.warmup_s) + search.min_requests {search.min_requests}): widen the window or "
                            "lower them")


class TraceWindowShort(WorkloadError):
    """A trace window with fewer rows than a probe at this rate needs (its unscored head grows with the rate)."""


def paced_to(items: list[WorkItem], rate: float) -> float:
    """Scale a trace window's arrival offsets (ms, from its first row) in place so that its mean rate is `rate`,
    keeping the trace's own gaps in proportion; returns the speedup (rate / the rows' own mean rate)."""
    span_ms = (items[-1].arrival_ms or 0.0) - (items[0].arrival_ms or 0.0)
    if len(items) < 2 or span_ms <= 0:
        raise WorkloadError("a trace probe needs rows at two or more distinct timestamps")
    speedup = rate / ((len(items) - 1) / (span_ms / 1000.0))
    t0 = items[0].arrival_ms or 0.0
    for it in items:
        it.arrival_ms = ((it.arrival_ms or 0.0) - t0) / speedup
    return speedup


@dataclass(frozen=True)
class Settled:
    """What settle found before a probe."""
    waited_s: float
    busy: bool                           # still running or queueing requests (or holding KV cache) at the bound


# the KV cache a server holds with nothing running: freed blocks of a prefix cache count as free in vLLM's gauge
IDLE_KV_USAGE = 0.01


def settle(backend: ServingBackend, limit_s: float) -> Settled:
    """Wait (up to limit_s) until no server runs or queues a request and each one's KV cache is back to idle, so a
    probe never inherits the backlog of the one before (a server may go on with requests whose client gave up)."""
    t0 = time.monotonic()
    while True:
        busy = busy_now(backend)
        if not busy or time.monotonic() - t0 >= limit_s:
            return Settled(time.monotonic() - t0, busy)
        time.sleep(0.2)


def busy_now(backend: ServingBackend) -> bool:
    """Whether the router holds requests, or a server runs, queues or holds KV cache for any, by its gauges."""
    if backend.router_in_flight() > 0:
        return True
    for fetch in backend.metric_sources().values():
        try:
            samples = parse(fetch())
        except Exception:  # noqa: BLE001 - a server without metrics has nothing to wait for
            continue
        if value(samples, "vllm:num_requests_running") + value(samples, "vllm:num_requests_waiting") > 0 or \
                value(samples, "vllm:kv_cache_usage_perc") > IDLE_KV_USAGE:
            return True
    return False


def _score(probe: Probe, slo: SLO, policy: SearchPolicy) -> None:
    t = att.tally(probe.records, slo)
    probe.sent = sum(1 for r in probe.records if not r.warmup)
    probe.decided, probe.met, probe.missed, probe.undecided = t["decided"], t["met"], t["missed"], t["undecided"]
    probe.attainment, probe.wilson_low, probe.wilson_high = t["attainment"], t["wilson_low"], t["wilson_high"]
    probe.misses_by_cause = t["misses_by_cause"]
    in_order = sorted((r for r in probe.records if not r.warmup), key=lambda r: r.t_send_ns or 0)
    outcomes = [o.met for o in (att.outcome(r, slo) for r in in_order) if o.met is not None]
    bounds = att.batch_means(outcomes)
    probe.attainment_low, probe.attainment_high, probe.n_eff = bounds.low, bounds.high, bounds.n_eff
    probe.backlog = sum(1 for r in probe.records if r.status == CANCELLED)
    probe.send_lag_p99_ms = _send_lag_p99(probe.records)
    probe.offered_rate = offered_rate(probe.records)
    probe.client_lagged = (probe.send_lag_p99_ms or 0.0) > policy.lag_bound_ms
    probe.early_stop = probe.backlog > 0   # cut off: what was in flight when it stopped was cancelled
    if probe.missed > policy.allowed_misses(probe.planned):
        probe.verdict, probe.decided_by = "fail", "misses beyond what the target allows"
    elif policy.mode == "percentile":
        probe.percentile = att.percentile_verdict(probe.records, slo, policy.target)
        probe.verdict, probe.decided_by = probe.percentile["verdict"], "percentile SLOs"
    elif (sign := not_steady(probe.records, slo, policy.target)):
        probe.verdict, probe.decided_by = "fail", sign
    else:
        probe.verdict = att.verdict(probe.met, probe.decided, policy.target)
        probe.decided_by = "95% Wilson interval"
        if probe.verdict == "undecided":   # the point estimate decides, and says why it had to
            probe.verdict = "pass" if (probe.attainment or 0.0) >= policy.target else "fail"
            # at the cap; or the probe stopped on a verdict and the requests then in flight made it undecided
            probe.decided_by = "point estimate at the request cap" if probe.sent >= probe.planned else \
                "point estimate (undecided once the requests in flight at its stop finished)"


def last_by_rate(probes: list[Probe]) -> dict[float, Probe]:
    """Each rate's last probe: a full probe at a scout's rate replaces the scout."""
    return {p.rate: p for p in probes}


def next_rate(probes: list[Probe], low: float, high: float, policy: SearchPolicy) -> float:
    """The next rate inside a bracket (a pass at `low`, a fail at `high`). Attainment stays near 1 until close to
    capacity and then drops steeply: a pass end above 1 - (1 - target)/2 (0.95 at 0.9) lies on the flat part and says
    nothing of how far the knee is, and a line from it lands next to it, so the bracket would shrink from below by a
    small step at a time: there the next probe is the geometric midpoint, which halves the bracket (on log rate) whatever the curve. A pass end on
    the knee is informative: the next probe goes where the attainments at the ends cross the target, interpolated
    on log rate (regula falsi), at least one tolerance step inside each end so that a probe there can close the
    bracket; when the last k >= 2 probes inside the bracket all moved the same end, the other end's distance from
    the target counts 1/2^(k-1) (the Illinois rule). Midpoint too where the ends do not straddle the target or two
    steps do not fit."""
    step = 1 + policy.tolerance
    mid = math.sqrt(low * high)
    at = last_by_rate(probes)
    a_lo, a_hi = (at[r].attainment if r in at else None for r in (low, high))
    if a_lo is None or a_hi is None or not a_lo > policy.target > a_hi or high / low <= step * step or \
            a_lo > 1 - (1 - policy.target) / 2:
        return mid
    verdicts = [p.verdict for p in probes]
    formed = next(i for i in range(len(verdicts)) if {"pass", "fail"} <= set(verdicts[:i + 1]))
    narrowing = verdicts[formed + 1:]           # the probes since the bracket was first formed
    same = next((i for i, v in enumerate(reversed(narrowing)) if v != narrowing[-1]), len(narrowing))
    weight = 0.5 ** max(0, same - 1)
    if narrowing and narrowing[-1] == "pass":
        a_hi = policy.target - (policy.target - a_hi) * weight
    else:
        a_lo = policy.target + (a_lo - policy.target) * weight
    guess = low * (high / low) ** ((a_lo - policy.target) / (a_lo - a_hi))
    return float(min(max(guess, low * step), high / step))


def _trace_outcomes(probe: Probe, slo: SLO) -> dict[int, bool]:
    """A trace probe's finished scored requests by trace row: met or not. Cancelled ones are left out: the misses a
    cut-off probe cancels are certain by age alone, which is what a queue above capacity produces."""
    out = {}
    for rec in probe.records:
        row = rec.tags.get("trace_row")
        if rec.warmup or row is None or rec.status == CANCELLED:
            continue
        met = att.outcome(rec, slo).met
        if met is not None:
            out[int(row)] = met
    return out


def same_rows_missed(higher: Probe, lower: Probe, slo: SLO, policy: SearchPolicy) -> Optional[str]:
    """Why a search replaying a trace on its timestamps, going down, should stop: two failing probes, the second at
    a lower rate, in which exactly the same trace rows missed and the same rows met (over the finished rows both
    decided: at least min_requests, with at least one miss and one met). Scaling a trace's rate stretches the gaps
    between its rows; rows that share a timestamp (a burst) stay together, and a request that misses unloaded misses
    at any rate. When halving the rate rescued no row, lower rates will not either. Not for a queue still growing
    (rising misses or climbing latency), nor where nothing met: a backlog above capacity makes every row miss at
    both rates."""
    if policy.arrival != "trace" or higher.verdict != "fail" or lower.verdict != "fail" or \
            lower.rate > higher.rate / 2 * (1 + 1e-9) or lower.decided_by in NOT_STEADY:
        return None             # a halving step only (not a scout's re-measure a few percent below a fail)
    a, b = _trace_outcomes(higher, slo), _trace_outcomes(lower, slo)
    common = a.keys() & b.keys()
    missed = [r for r in common if not b[r]]
    if len(common) < policy.min_requests or not missed or len(missed) == len(common) or \
            any(a[r] != b[r] for r in common):
        return None
    return (f"the same {len(missed)} trace rows missed at {higher.rate:.3g} and {lower.rate:.3g} req/s "
            "(misses not from the load)")


def scored(probes: list[Probe]) -> list[Probe]:
    """The probes the bracket rests on: not those the client paced (their load was not the rate's), nor the
    closing repeat probes."""
    return [p for p in probes if not p.client_lagged and not p.repeat]


def bracket(probes: list[Probe]) -> tuple[Optional[float], Optional[float]]:
    """The highest passing rate and the lowest failing rate above it, from each rate's last scored probe (a full
    probe at a scout's rate replaces the scout; a fail below a later pass was noise)."""
    last = last_by_rate(scored(probes))
    low = max((r for r, p in last.items() if p.verdict == "pass"), default=None)
    high = min((r for r, p in last.items() if p.verdict != "pass" and (low is None or r > low)), default=None)
    return low, high


def search(backend: ServingBackend, items_fn: ItemsFn, slo: SLO, policy: SearchPolicy, *, timeout_s: float,
           on_probe: Optional[Callable[[Probe], None]] = None,
           on_records: Optional[Callable[[list[RequestRecord]], None]] = None) -> SearchResult:
    """Bracket by doubling (or halving) with scouts, then narrow (next_rate) with full probes, the highest rate whose
    probe passes; a bracket within tolerance whose end is a scout measures that end again in full. A probe the
    client paced is never scored: its rate is measured again from twice the client processes (up to
    policy.most_workers(), then once more with those), and where that too falls behind the search stops with a
    lower bound (client_limited)."""
    low: Optional[float] = None
    high: Optional[float] = None
    probes: list[Probe] = []
    rate, t0, again = policy.start_rate, time.monotonic(), False
    workers, client_limited = policy.workers, False
    floor = policy.start_rate / 2 ** 6
    while True:
        if len(probes) >= policy.max_probes:
            stopped = f"probe cap ({policy.max_probes})"
            break
        if time.monotonic() - t0 >= policy.max_wall_s:
            stopped = f"wall-time cap ({policy.max_wall_s:g} s)"
            break
        try:
            probe = run_probe(backend, len(probes), rate, items_fn, slo, policy, timeout_s=timeout_s,
                              on_records=on_records, scout=(low is None or high is None) and not again,
                              workers=workers)
        except TraceWindowShort as exc:         # at a higher rate the unscored head (warmup_s) needs more rows
            stopped = f"trace window too short at {rate:.3g} req/s ({exc})"
            break
        probes.append(probe)
        if on_probe:
            on_probe(probe)
        if probe.client_lagged:
            if workers < policy.most_workers():
                workers = min(2 * workers, policy.most_workers())
                continue
            if sum(p.client_lagged and p.rate == rate and p.workers == workers for p in probes) < 2:
                continue        # once more: one probe may have met a busy moment of the host
            client_limited = True
            stopped = (f"the client fell behind its schedule at {rate:.3g} req/s twice from {workers} process(es) "
                       f"(p99 send lag {probe.send_lag_p99_ms or 0:.0f} ms > {policy.lag_bound_ms:g} ms; "
                       "search.max_workers): the goodput is a lower bound")
            break
        again = probe.scout and probe.verdict != "pass"
        if again:       # it stopped on a scout's pass and what was in flight turned it: a scout never fails early
            continue
        counted = scored(probes)
        low, high = bracket(probes)
        last = last_by_rate(counted)
        closed = low is not None and high is not None and high / low <= 1 + policy.tolerance
        if closed and low is not None and not last[low].scout:
            stopped = f"bracket within {100 * policy.tolerance:g}%"
            break
        # the answer rests on a full probe: a scout's pass at the low end is measured again in full once the bracket
        # closes on it, or sooner, once the last three probes all failed in full (the bracket's fail end and two
        # narrowing probes below it): a scout may pass above capacity, and every probe narrowing down toward it
        # would be spent above capacity too
        streak = counted[-3:]
        if low is not None and last[low].scout and \
                (closed or len(streak) == 3 and all(p.verdict == "fail" and not p.scout for p in streak)):
            rate, again = low, True
            continue
        if low is None and len(counted) >= 2 and (same := same_rows_missed(counted[-2], counted[-1], slo, policy)):
            stopped = same
            break
        if high is None:
            assert low is not None        # a verdict was reached: one end exists
            rate = 2 * low
        else:
            rate = high / 2 if low is None else next_rate(counted, low, high, policy)
        if low is None and rate < floor:
            stopped = f"no rate down to {floor:.3g} req/s met the target"
            break
    last = last_by_rate(scored(probes))
    converged = low is not None and high is not None and high / low <= 1 + policy.tolerance and \
        not (last[low].scout or last[high].scout)
    if low is not None and last[low].scout:       # a cap ended it first: a converged goodput rests on full probes
        stopped += "; the goodput is a scout's pass, not measured in full"
    repeat = None
    if converged and policy.repeat_check and low is not None and high is not None:
        repeat = repeat_ends(backend, items_fn, slo, policy, probes, (low, high), timeout_s=timeout_s,
                             on_probe=on_probe, on_records=on_records, workers=workers)
    interval = goodput_interval(probes, policy.target, low or 0.0)
    return SearchResult(low or 0.0, low, high, converged, stopped, probes, *interval, repeat=repeat,
                        client_limited=client_limited)


def repeat_ends(backend: ServingBackend, items_fn: ItemsFn, slo: SLO, policy: SearchPolicy, probes: list[Probe],
                ends: tuple[float, float], *, timeout_s: float, on_probe: Optional[Callable[[Probe], None]] = None,
                on_records: Optional[Callable[[list[RequestRecord]], None]] = None, workers: int = 1) -> str:
    """The answer's rate and the first failing rate measured once more, full probes in random order (a probe must
    not owe its verdict to the one before it); they are appended to `probes` (marked repeat: the interval counts
    them, the bracket does not). Says "repeated" or "not repeatable at this probe size", with the size that would
    settle it."""
    order = list(ends)
    np.random.default_rng(np.random.SeedSequence([policy.seed, len(probes)])).shuffle(order)
    first = {p.rate: p for p in scored(probes)}
    again = {}
    for rate in order:
        probe = run_probe(backend, len(probes), rate, items_fn, slo, policy, timeout_s=timeout_s,
                          on_records=on_records, workers=workers)
        probe.repeat = True
        probes.append(probe)
        again[rate] = probe
        if on_probe:
            on_probe(probe)
    paced = [r for r in ends if again[r].client_lagged]
    if paced:
        return "not measured again: the client fell behind its schedule at " + \
            ", ".join(f"{r:.3g} req/s" for r in paced)
    flipped = [r for r in ends if again[r].verdict != first[r].verdict]
    if not flipped:
        return "repeated"
    return ("not repeatable at this probe size: " + "; ".join(
        f"{r:.3g} req/s {first[r].verdict} then {again[r].verdict}" for r in flipped) +
        f"; settling it takes probes of about {settling_size(list(again.values()) + [first[r] for r in ends], policy)}"
        " scored requests")


def settling_size(probes: list[Probe], policy: SearchPolicy) -> int:
    """Scored requests a probe at these rates would need for its dependence-aware bounds to clear the target four
    times in five: the effective sample size that a margin of |attainment - target| needs at one-sided 95% with 80%
    power, scaled by each probe's requests per effective one (as measured at its own size); the largest over the
    probes."""
    need = 0
    for p in probes:
        if p.attainment is None or p.n_eff <= 0:
            continue
        margin = max(abs(p.attainment - policy.target), 0.01)
        var = max(p.attainment * (1 - p.attainment), policy.target * (1 - policy.target))
        need = max(need, math.ceil((att.T9_95 + Z80) ** 2 * var / margin ** 2 * p.decided / p.n_eff))
    return need
