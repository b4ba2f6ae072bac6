"""Placements on the engine model, and the share of requests each serves within an SLO at a Poisson rate.

A placement is aggregated replicas (each GPU a whole server) or xPyD (x prefill and y decode servers, the KV handed
over between them). The model deals requests to a pool's instances in turn (the router's `round_robin` policy; its
default, `least_outstanding`, balances at least as well), so an instance of a pool of k sees every k-th request of
the Poisson stream: gaps that are the sum of k exponential ones (Erlang k).
The instances of a pool do not interact, so one of each kind, fed those gaps, stands for the pool
(`attainment`): exact for aggregated replicas; for xPyD the decode instance's arrivals are taken as Erlang gaps too
(they are the prefill instances' departures, dealt in turn) and each request's times on the two are paired by
index, as if independent. `attainment_full` runs the whole placement, every instance and the handoffs between,
to check that shortcut where N is small (tests/test_plan_model.py).

A request meets the SLO when its TTFT and its TPOT both do (E4's joint attainment, DistServe's definition). TTFT
is what the client sees: queueing and steps on the prefill side, the handoff, and the decode instance's wait and
first step, with the request overhead once per server the request visits.
"""
from __future__ import annotations

from typing import Any, Generator

import numpy as np
import simpy
from pydantic import BaseModel, ConfigDict, Field

from ctxkit.plan.costs import Calibration
from ctxkit.plan.engine import Instance, Job

WARMUP_SHARE = 0.2          # the first arrivals meet an empty server: left out of the attainment, as E4's warmup is


class Placement(BaseModel):
    """Where N GPUs go: aggregated replicas (one GPU each), or prefill and decode servers (one GPU each)."""
    model_config = ConfigDict(frozen=True)
    replicas: int = 0
    prefill: int = 0
    decode: int = 0

    @property
    def gpus(self) -> int:
        return self.replicas or self.prefill + self.decode

    @property
    def disaggregated(self) -> bool:
        return not self.replicas

    @property
    def mode(self) -> str:
        return "disagg" if self.disaggregated else "agg"

    @property
    def name(self) -> str:
        return f"aggregated x{self.replicas}" if self.replicas else f"{self.prefill}P{self.decode}D"


class Workload(BaseModel):
    model_config = ConfigDict(frozen=True)
    input_len: int = Field(ge=1)
    output_len: int = Field(ge=1)


class Slo(BaseModel):
    model_config = ConfigDict(frozen=True)
    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)


def unit_gaps(n: int, k: int, seed: int) -> np.ndarray:
    """Gaps between the requests one of k round-robin instances receives from a Poisson stream of rate 1."""
    return np.random.default_rng([seed, k]).gamma(k, 1.0, size=n)


def _run_instance(cal: Calibration, role: str, gaps_s: np.ndarray, workload: Workload, horizon_s: float) -> list[Job]:
    env = simpy.Environment()
    inst = Instance(env, cal.step_cost(), cal.limits, role)
    jobs = [Job(i, workload.input_len, workload.output_len, float(t)) for i, t in enumerate(np.cumsum(gaps_s))]

    def arrive() -> Generator[simpy.Event, Any, None]:
        for job in jobs:
            yield env.timeout(max(0.0, job.arrival_s - env.now))
            inst.submit(job)
    env.process(arrive())
    env.run(until=horizon_s)
    return jobs


def _horizon(arrivals_end: float, workload: Workload, slo: Slo) -> float:
    """When every request's verdict is settled: a request without its last token by then has missed."""
    return arrivals_end + (slo.ttft_ms + slo.tpot_ms * max(1, workload.output_len - 1)) / 1e3 * 1.05 + 1.0


def _met(ttft_s: np.ndarray, tpot_s: np.ndarray, slo: Slo) -> float:
    scored = slice(int(len(ttft_s) * WARMUP_SHARE), None)
    ok = (ttft_s[scored] <= slo.ttft_ms / 1e3) & (tpot_s[scored] <= slo.tpot_ms / 1e3)
    return float(ok.mean())


def _times(jobs: list[Job]) -> tuple[np.ndarray, np.ndarray]:
    """Each job's time to its first token and its TPOT (inf where it had none by the horizon)."""
    first = np.array([j.first_token_s - j.arrival_s if j.first_token_s is not None else np.inf for j in jobs])
    return first, np.array([_tpot(j) for j in jobs])


def _tpot(job: Job) -> float:
    """A finished job's TPOT (0 for one token), inf for one the horizon cut off."""
    return (job.tpot_s() or 0.0) if job.generated >= job.output else np.inf


def attainment(placement: Placement, cal: Calibration, workload: Workload, slo: Slo, rate: float,
               requests: int = 2000, seed: int = 0) -> float:
    """Joint SLO attainment at `rate` req/s over the whole placement, from one instance of each pool."""
    overhead = cal.step_cost().request_overhead_ms / 1e3
    if not placement.disaggregated:
        gaps = unit_gaps(requests, placement.replicas, seed) / rate
        jobs = _run_instance(cal, "both", gaps, workload, _horizon(gaps.sum(), workload, slo))
        first, tpot = _times(jobs)
        return _met(first + overhead, tpot, slo)
    if cal.transfer is None:
        raise ValueError("this calibration has no KV transfer figures: it predicts aggregated placements only")
    pre_gaps = unit_gaps(requests, placement.prefill, seed) / rate
    pre_jobs = _run_instance(cal, "prefill", pre_gaps, Workload(input_len=workload.input_len, output_len=1),
                             _horizon(pre_gaps.sum(), workload, slo))
    dec_gaps = unit_gaps(requests, placement.decode, seed + 1) / rate
    dec_jobs = _run_instance(cal, "decode", dec_gaps, workload, _horizon(dec_gaps.sum(), workload, slo))
    pre_first, _ = _times(pre_jobs)
    dec_first, tpot = _times(dec_jobs)
    ttft = pre_first + cal.transfer.seconds(workload.input_len) + dec_first + 2 * overhead
    return _met(ttft, tpot, slo)


def attainment_full(placement: Placement, cal: Calibration, workload: Workload, slo: Slo, rate: float,
                    requests: int = 2000, seed: int = 0) -> float:
    """The same, with every instance of the placement and each request's handoff simulated."""
    env = simpy.Environment()
    cost, overhead = cal.step_cost(), cal.step_cost().request_overhead_ms / 1e3
    if placement.disaggregated:
        pools = [[Instance(env, cost, cal.limits, "prefill") for _ in range(placement.prefill)],
                 [Instance(env, cost, cal.limits, "decode") for _ in range(placement.decode)]]
    else:
        pools = [[Instance(env, cost, cal.limits, "both") for _ in range(placement.replicas)]]
    arrivals = np.cumsum(np.random.default_rng([seed, 0]).exponential(1.0 / rate, size=requests))
    ttft, tpot = np.full(requests, np.inf), np.full(requests, np.inf)

    def serve(i: int, t0: float) -> Generator[simpy.Event, Any, None]:
        job = Job(i, workload.input_len, 1 if placement.disaggregated else workload.output_len, t0)
        yield pools[0][i % len(pools[0])].submit(job)
        if placement.disaggregated and job.first_token_s is not None:
            assert cal.transfer is not None
            yield env.timeout(cal.transfer.seconds(workload.input_len))
            job = Job(i, workload.input_len, workload.output_len, env.now)
            yield pools[1][i % len(pools[1])].submit(job)
        if job.first_token_s is not None:
            ttft[i] = job.first_token_s - t0 + overhead * len(pools)
            tpot[i] = _tpot(job)

    def arrive() -> Generator[simpy.Event, Any, None]:
        for i, t in enumerate(arrivals):
            yield env.timeout(max(0.0, t - env.now))
            env.process(serve(i, float(t)))
    env.process(arrive())
    env.run(until=_horizon(float(arrivals[-1]), workload, slo))
    return _met(ttft, tpot, slo)


def goodput(placement: Placement, cal: Calibration, workload: Workload, slo: Slo, target: float = 0.9,
            requests: int = 2000, seed: int = 0, resolution: float = 0.01, start: float = 1.0) -> float:
    """The highest rate (req/s) at which the model's attainment reaches `target`: from `start`, steps of 1.25x up
    while rates pass (down while they fail) to a bracket, then bisection on the rates' logarithm to `resolution`.
    The same arrivals at every rate, scaled (common random numbers keep the attainment monotone in the rate). 0 when
    no rate down to a thousandth of `start` meets the SLO (an objective below the unloaded latency)."""
    def ok(rate: float) -> bool:
        return attainment(placement, cal, workload, slo, rate, requests, seed) >= target
    step = 1.25
    lo, hi = (start, start * step) if ok(start) else (start / step, start)
    while ok(hi):
        lo, hi = hi, hi * step
        if hi > 1e6:
            raise ValueError(f"{placement.name}: no rate fails below 1e6 req/s: the calibration is not sensible")
    floor = start / 1e3
    while not ok(lo):
        if lo < floor:
            return 0.0                      # not even a thousandth of the start meets the SLO: the SLO is out of reach
        lo, hi = lo / step, lo
    while hi / lo > 1 + resolution:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
