"""Latency metrics, version 1 of DESIGN.md, computed from RequestRecords (so a summary can always be recomputed
from requests.jsonl).

Per request: TTFT = t_first - t_send; TTFT_sched = t_first - t_sched; TPOT = (t_last - t_first) / (n_out - 1)
for n_out > 1; ITL = gaps between token-carrying chunks (a chunk of k tokens gives k gaps of gap/k);
E2E = t_last - t_send; NTPOT = E2E / n_out; client lag = t_send - t_sched.
Warmup records are excluded. Failed requests count in `failed` and as SLO misses, never in latency stats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np

from ctxkit.records import RequestRecord

PERCENTILES = (50, 90, 95, 99)
NS_PER_MS = 1e6


def stats(values: Iterable[float]) -> dict[str, Any]:
    """count, min, max, avg, std, p50, p90, p95, p99 (linear interpolation); None for an empty sample."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return {"count": 0, "min": None, "max": None, "avg": None, "std": None,
                **{f"p{p}": None for p in PERCENTILES}}
    return {"count": int(arr.size), "min": float(arr.min()), "max": float(arr.max()), "avg": float(arr.mean()),
            "std": float(arr.std()), **{f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}}


@dataclass(frozen=True)
class RequestLatency:
    ttft_ms: Optional[float]
    ttft_sched_ms: Optional[float]
    tpot_ms: Optional[float]
    e2e_ms: Optional[float]
    ntpot_ms: Optional[float]
    client_lag_ms: Optional[float]
    itl_ms: tuple[float, ...]


def request_latency(rec: RequestRecord) -> RequestLatency:
    ms = lambda ns: ns / NS_PER_MS  # noqa: E731
    ttft = ms(rec.t_first_ns - rec.t_send_ns) if rec.t_first_ns is not None else None
    ttft_sched = ms(rec.t_first_ns - rec.t_sched_ns) if rec.t_first_ns is not None and rec.t_sched_ns else None
    n_out = rec.n_out or sum(rec.chunk_tokens)
    tpot = None
    if rec.t_first_ns is not None and rec.t_last_ns is not None and n_out > 1:
        tpot = ms(rec.t_last_ns - rec.t_first_ns) / (n_out - 1)
    e2e = ms(rec.t_last_ns - rec.t_send_ns) if rec.t_last_ns is not None else None
    ntpot = e2e / n_out if e2e is not None and n_out > 0 else None
    lag = ms(rec.t_send_ns - rec.t_sched_ns) if rec.t_sched_ns else None
    itl: list[float] = []
    for i in range(1, len(rec.chunk_times_ns)):
        k = max(1, rec.chunk_tokens[i])
        itl.extend([ms(rec.chunk_times_ns[i] - rec.chunk_times_ns[i - 1]) / k] * k)
    return RequestLatency(ttft, ttft_sched, tpot, e2e, ntpot, lag, tuple(itl))


@dataclass(frozen=True)
class SLO:
    """Per-request service-level objectives in ms; None means no objective on that metric."""
    ttft_ms: Optional[float] = None
    tpot_ms: Optional[float] = None
    e2e_ms: Optional[float] = None

    def met(self, rec: RequestRecord, lat: RequestLatency) -> bool:
        if not rec.ok:
            return False
        for limit, value in ((self.ttft_ms, lat.ttft_ms), (self.tpot_ms, lat.tpot_ms), (self.e2e_ms, lat.e2e_ms)):
            if limit is not None and (value is None or value > limit):
                return False
        return True

    def as_dict(self) -> dict[str, Optional[float]]:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2e_ms": self.e2e_ms}


def summarize(records: list[RequestRecord], slo: Optional[SLO] = None) -> dict[str, Any]:
    """profiling.latency of a summary: distributions, throughput, SLO attainment and goodput, vLLM aliases."""
    measured = [r for r in records if not r.warmup]
    done = [r for r in measured if r.ok]
    lats = [request_latency(r) for r in done]
    dist = {
        "ttft_ms": stats(l.ttft_ms for l in lats),
        "ttft_sched_ms": stats(l.ttft_sched_ms for l in lats),
        "tpot_ms": stats(l.tpot_ms for l in lats),
        "itl_ms": stats(x for l in lats for x in l.itl_ms),
        "e2e_ms": stats(l.e2e_ms for l in lats),
        "ntpot_ms": stats(l.ntpot_ms for l in lats),
        "client_lag_ms": stats(l.client_lag_ms for l in lats),
    }
    starts = [r.t_send_ns for r in measured if r.t_send_ns]
    ends = [r.t_last_ns for r in done if r.t_last_ns is not None]
    duration_s = (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0
    out_tokens = sum(r.n_out for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    errors: dict[str, int] = {}
    for r in measured:
        if not r.ok:
            errors[r.status] = errors.get(r.status, 0) + 1
    summary: dict[str, Any] = {
        "requests": len(measured),
        "completed": len(done),
        "failed": len(measured) - len(done),
        "errors_by_status": errors,
        "duration_s": duration_s,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": per_s(len(done)),
        "output_throughput": per_s(out_tokens),
        "total_token_throughput": per_s(out_tokens + in_tokens),
        **dist,
    }
    if slo is not None:
        met = [r for r, l in zip(done, lats) if slo.met(r, l)]
        summary["slo"] = slo.as_dict()
        summary["slo_attainment"] = len(met) / len(measured) if measured else 0.0
        summary["request_goodput"] = per_s(len(met))
        summary["token_goodput"] = per_s(sum(r.n_out for r in met))
    summary["vllm"] = vllm_aliases(summary)
    return summary


def vllm_aliases(summary: dict[str, Any]) -> dict[str, Any]:
    """The same numbers under `vllm bench serve`'s result keys, for side-by-side comparison."""
    out: dict[str, Any] = {k: summary[k] for k in ("completed", "total_input_tokens", "request_throughput",
                                                     "output_throughput", "total_token_throughput")}
    out["failed"] = summary["failed"]
    out["duration"] = summary["duration_s"]
    out["total_output_tokens"] = summary["total_output_tokens"]
    if "request_goodput" in summary:
        out["request_goodput"] = summary["request_goodput"]
    for ours, theirs in (("ttft_ms", "ttft_ms"), ("tpot_ms", "tpot_ms"), ("itl_ms", "itl_ms"), ("e2e_ms", "e2el_ms")):
        s = summary[ours]
        out[f"mean_{theirs}"] = s["avg"]
        out[f"median_{theirs}"] = s["p50"]
        out[f"std_{theirs}"] = s["std"]
        for p in PERCENTILES:
            out[f"p{p}_{theirs}"] = s[f"p{p}"]
    return out


def flat(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat `<stat>_<metric>_<unit>` names (one CSV row per sweep point)."""
    row: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and "count" in value:
            metric, _, unit = key.rpartition("_")
            for stat, v in value.items():
                row[f"{stat}_{metric}_{unit}"] = v
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = value
    return row
