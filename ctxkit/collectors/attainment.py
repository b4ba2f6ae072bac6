"""SLO attainment with confidence, for the goodput search (E4).

Joint attainment (DistServe's): the share of requests that completed and met every SLO given. Its uncertainty is a
95% Wilson score interval on k met out of n decided. A probe passes when the whole interval lies at or above the
target, fails when it lies below, and is undecided otherwise. Percentile mode instead asks p90 TTFT <= x and p90
TPOT <= y over the probe (the target's quantile), a point verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ctxkit.collectors.latency import SLO, RequestLatency, request_latency
from ctxkit.records import CANCELLED, RequestRecord

LatencyFn = Callable[[RequestRecord], RequestLatency]

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for k successes out of n (0, 1 when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    return _wilson_p(k / n, n, z)


BATCHES = 10                      # contiguous batches of a probe's outcomes, in send order (batch_means)
T9_95 = 1.8331129326536335        # Student's t, 9 degrees of freedom, one-sided 95%: each end of a 90% interval


@dataclass(frozen=True)
class Bounds:
    """One-sided bounds on a probe's attainment that count its requests' dependence (batch_means)."""
    low: float
    high: float
    n_eff: float                  # requests as informative as this many independent ones (n / design effect)


def batch_means(met: list[bool], z: float = T9_95, batches: int = BATCHES) -> Bounds:
    """Bounds on attainment from outcomes in send order, each end at one-sided confidence z: a Wilson interval at
    the effective sample size. Requests in a queue are not independent draws (a burst's neighbours wait together),
    so the variance of the share met is estimated from the spread of `batches` contiguous batch means, not from
    p(1 - p) / n; n_eff = n / max(1, that variance / the binomial one). A probe with no miss in any batch (or only
    misses) shows no spread and keeps n. The batches see dependence up to a batch's length only: a queue whose
    correlation time is longer than the probe needs a longer probe (or repeated ones), not a wider formula."""
    n = len(met)
    if n == 0:
        return Bounds(0.0, 1.0, 0.0)
    x = np.asarray(met, dtype=float)
    p = float(x.mean())
    n_eff = float(n)
    if n >= 2 * batches and 0 < p < 1:
        size = n // batches
        means = x[n - size * batches:].reshape(batches, size).mean(axis=1)   # the oldest remainder left out
        design = (means.var(ddof=1) / batches) / (p * (1 - p) / n)
        n_eff = n / max(1.0, design)
    low, high = _wilson_p(p, n_eff, z)
    return Bounds(low, high, n_eff)


def _wilson_p(p: float, n: float, z: float) -> tuple[float, float]:
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def verdict(k: int, n: int, target: float) -> str:
    """pass | fail | undecided, from the Wilson interval against the target."""
    lo, hi = wilson(k, n)
    if lo >= target:
        return "pass"
    if hi < target:
        return "fail"
    return "undecided"


@dataclass(frozen=True)
class Outcome:
    """One request's standing against the SLO: met, missed (and which objective), or not decided yet."""
    met: Optional[bool]           # None: still in flight (or cancelled) without a certain outcome
    ttft_miss: bool = False
    tpot_miss: bool = False
    e2e_miss: bool = False
    failed: bool = False

    @property
    def cause(self) -> str:
        if self.failed:
            return "failed"
        misses = [name for name, m in (("ttft", self.ttft_miss), ("tpot", self.tpot_miss), ("e2e", self.e2e_miss))
                  if m]
        return "+".join(misses) if misses else "met"


def outcome(rec: RequestRecord, slo: SLO, now_ns: Optional[int] = None,
            latency_of: LatencyFn = request_latency) -> Outcome:
    """A finished request's outcome; for one in flight (or cancelled), a miss only once it is certain: no first
    token by the TTFT objective, or no last token by the E2E objective. `latency_of`: request_latency, or a
    memo of it (ctxkit.load.search: a stop rule asks again before every send)."""
    if rec.status == CANCELLED or (now_ns is not None and rec.t_end_ns is None):
        now = rec.t_end_ns if rec.status == CANCELLED and rec.t_end_ns else now_ns
        age_ms = (now - rec.t_send_ns) / 1e6 if now and rec.t_send_ns else 0.0
        ttft_late = rec.t_first_ns is None and slo.ttft_ms is not None and age_ms > slo.ttft_ms
        e2e_late = slo.e2e_ms is not None and age_ms > slo.e2e_ms
        return Outcome(False, ttft_miss=ttft_late, e2e_miss=e2e_late) if ttft_late or e2e_late else Outcome(None)
    if not rec.ok:
        return Outcome(False, failed=True)
    ttft, tpot, e2e = slo.misses(latency_of(rec))
    return Outcome(not (ttft or tpot or e2e), ttft, tpot, e2e)


def tally(records: list[RequestRecord], slo: SLO, now_ns: Optional[int] = None,
          latency_of: LatencyFn = request_latency) -> dict[str, Any]:
    """Met, missed (by cause) and undecided counts over measured records, with the Wilson interval."""
    outs = [outcome(r, slo, now_ns, latency_of) for r in records if not r.warmup]
    decided = [o for o in outs if o.met is not None]
    met = sum(1 for o in decided if o.met)
    lo, hi = wilson(met, len(decided))
    causes: dict[str, int] = {}
    for o in decided:
        if not o.met:
            causes[o.cause] = causes.get(o.cause, 0) + 1
    return {"decided": len(decided), "met": met, "missed": len(decided) - met, "undecided": len(outs) - len(decided),
            "attainment": met / len(decided) if decided else None, "wilson_low": lo, "wilson_high": hi,
            "misses_by_cause": causes}


def percentile_verdict(records: list[RequestRecord], slo: SLO, target: float) -> dict[str, Any]:
    """Percentile SLOs: the target's quantile (p90 for 0.9) of TTFT and TPOT against the objectives."""
    lats = [request_latency(r) for r in records if not r.warmup and r.ok]
    q = 100 * target
    out: dict[str, Any] = {}
    ok = bool(lats) and len(lats) == sum(1 for r in records if not r.warmup)
    for name, limit in (("ttft_ms", slo.ttft_ms), ("tpot_ms", slo.tpot_ms), ("e2e_ms", slo.e2e_ms)):
        values = [getattr(lat, name) for lat in lats if getattr(lat, name) is not None]
        value = float(np.percentile(values, q)) if values else None
        out[f"p{q:g}_{name}"] = value
        if limit is not None:
            ok = ok and value is not None and value <= limit
    out["verdict"] = "pass" if ok else "fail"
    return out


def slo_scale_curve(records: list[RequestRecord], slo: SLO, scales: list[float]) -> list[dict[str, Any]]:
    """Attainment when every objective is multiplied by s (DistServe's SLO-scale figure), over the records decided
    at that scale: a request cancelled when its probe was cut off counts as a miss where it was already late for the
    scaled objective, and is left out where it was not (a cut-off probe cancels its certain misses: leaving them
    all out would draw it better than its verdict)."""
    scored = [r for r in records if not r.warmup]
    rows = []
    for s in scales:
        scaled = SLO(*(None if v is None else v * s for v in (slo.ttft_ms, slo.tpot_ms, slo.e2e_ms)))
        decided = [o for o in (outcome(r, scaled) for r in scored) if o.met is not None]
        met = sum(1 for o in decided if o.met)
        lo, hi = wilson(met, len(decided))
        rows.append({"slo_scale": s, "attainment": met / len(decided) if decided else None, "wilson_low": lo,
                     "wilson_high": hi, "n": len(decided)})
    return rows
