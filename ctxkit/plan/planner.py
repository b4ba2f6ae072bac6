"""The plan: every placement of N GPUs, its predicted goodput per GPU with an interval, and the winner.

Each placement's goodput comes from the engine model (placements.goodput) at the calibration's fitted costs; its
interval is the 5th to 95th percentile over `draws` calibrations drawn from the fits' sampling distribution
(Calibration.sample), so it says how far the measurements' spread moves the answer, not how the model errs (the
accuracy benchmark says that). Ranges are drawn for the placements that can change the answer: the best three
within 20% of the best per GPU. With N up to 8 every split xPyD (x + y = N) is modelled; above, the splits are
searched (goodput against x rises while decode has room and falls once it has not) and the best one's neighbours
modelled around it.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from pydantic import BaseModel

from ctxkit.plan.costs import Calibration
from ctxkit.plan.placements import Placement, Slo, Workload, goodput

EVERY_SPLIT_UP_TO = 8
CONTENDERS, TOP_DRAWN = 0.8, 3     # ranges for the best three placements within 20% of the best, per GPU


class Predicted(BaseModel):
    placement: Placement
    goodput: float                          # req/s the whole placement serves within the SLO
    per_gpu: float
    per_gpu_low: Optional[float] = None     # 5th-95th percentile over the calibration's draws
    per_gpu_high: Optional[float] = None


class Plan(BaseModel):
    gpus: int
    workload: Workload
    slo: Slo
    target: float
    draws: int
    predicted: list[Predicted]              # best first
    calibration: str                        # what it rests on: model, device, engine, runs, commit

    @property
    def winner(self) -> Predicted:
        return self.predicted[0]

    def margin(self) -> Optional[float]:
        """The winner's per-GPU goodput over the runner-up's."""
        return self.predicted[0].per_gpu / self.predicted[1].per_gpu if len(self.predicted) > 1 else None

    def separates(self) -> Optional[bool]:
        """Whether the winner's interval lies above the runner-up's (None without intervals)."""
        a, b = self.predicted[0], self.predicted[1] if len(self.predicted) > 1 else None
        if b is None or a.per_gpu_low is None or b.per_gpu_high is None:
            return None
        return a.per_gpu_low > b.per_gpu_high


def splits(gpus: int, cal: Calibration) -> list[Placement]:
    if cal.transfer is None or gpus < 2:
        return []
    return [Placement(prefill=x, decode=gpus - x) for x in range(1, gpus)]


def _best_split(gpus: int, rate_of: Callable[[Placement], float]) -> dict[Placement, float]:
    """Goodput of the splits worth modelling: all up to EVERY_SPLIT_UP_TO GPUs, else a ternary search over x
    (unimodal: more prefill servers help until the decode servers are the bottleneck) and the best's neighbours."""
    seen: dict[Placement, float] = {}

    def at(x: int) -> float:
        p = Placement(prefill=x, decode=gpus - x)
        if p not in seen:
            seen[p] = rate_of(p)
        return seen[p]
    if gpus <= EVERY_SPLIT_UP_TO:
        for x in range(1, gpus):
            at(x)
        return seen
    lo, hi = 1, gpus - 1
    while hi - lo > 2:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        lo, hi = (lo, m2) if at(m1) >= at(m2) else (m1, hi)
    best = max(range(lo, hi + 1), key=at)
    for x in (best - 1, best + 1):
        if 1 <= x < gpus:
            at(x)
    return seen


def plan(cal: Calibration, gpus: int, workload: Workload, slo: Slo, target: float = 0.9, draws: int = 8,
         seed: int = 0, requests: int = 2000, progress: Callable[[str], None] = lambda _: None) -> Plan:
    """Predict every placement of `gpus` GPUs (aggregated replicas; xPyD where the calibration has KV transfer)."""
    def rate_of(p: Placement) -> float:
        progress(p.name)
        return goodput(p, cal, workload, slo, target, requests=requests, seed=seed)
    rates = {Placement(replicas=gpus): rate_of(Placement(replicas=gpus))}
    if cal.transfer is not None and gpus >= 2:
        rates.update(_best_split(gpus, rate_of))
    drawn = [cal.sample(rng) for rng in np.random.default_rng(seed).spawn(draws)] if draws else []
    best = max(rates.values()) / gpus
    predicted: list[Predicted] = []
    for p, rate in sorted(rates.items(), key=lambda pr: -pr[1]):
        # ranges where they can change the answer: the placements within CONTENDERS of the best, at most TOP_DRAWN
        contender = rate / gpus >= CONTENDERS * best and len(predicted) < TOP_DRAWN
        spread = [goodput(p, c, workload, slo, target, requests=requests, seed=seed, start=rate) / gpus
                  for c in (drawn if contender else [])]
        if spread:
            progress(f"{p.name}: {len(drawn)} draws")
        predicted.append(Predicted(placement=p, goodput=rate, per_gpu=rate / gpus,
                                   per_gpu_low=float(np.percentile(spread, 5)) if spread else None,
                                   per_gpu_high=float(np.percentile(spread, 95)) if spread else None))
    predicted.sort(key=lambda r: -r.per_gpu)
    where = f"{cal.model} on {cal.device}, {cal.engine}" + (f", commit {cal.commit}" if cal.commit else "")
    return Plan(gpus=gpus, workload=workload, slo=slo, target=target, draws=draws, predicted=predicted,
                calibration=where)


def _rate(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}"


def render(p: Plan, peer: Optional[dict[str, Optional[float]]] = None) -> str:
    """A markdown table of one plan, best first; `peer`: a peer planner's req/s per placement name, beside."""
    ranged = p.draws > 0
    head = ["placement", "req/s", "per GPU"] + ([f"per GPU, {p.draws} draws 5-95% (the contenders)"] if ranged else [])
    head += ["AIConfigurator req/s"] if peer is not None else []
    lines = [f"**{p.gpus} GPU(s)**, {p.workload.input_len} in / {p.workload.output_len} out, TTFT "
             f"{p.slo.ttft_ms:g} ms and TPOT {p.slo.tpot_ms:g} ms for {p.target:.0%} of requests",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in p.predicted:
        spread = f"{_rate(r.per_gpu_low)}-{_rate(r.per_gpu_high)}" if r.per_gpu_low is not None else "-"
        cells = [r.placement.name, _rate(r.goodput), _rate(r.per_gpu)] + ([spread] if ranged else [])
        if peer is not None:
            cells.append(_rate(peer.get(r.placement.name)))
        lines.append("| " + " | ".join(cells) + " |")
    margin, apart = p.margin(), p.separates()
    if margin is not None:
        lines += ["", f"Winner: {p.winner.placement.name}, {margin:.2f}x the runner-up per GPU"
                  + ("" if apart is None else " (the draws' ranges separate)" if apart else
                     " (the draws' ranges overlap: not a clear winner)")]
    return "\n".join(lines)
