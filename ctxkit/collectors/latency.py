"""Latency metrics (docs/metrics.md, version 1), computed from RequestRecords, so a summary can always be
recomputed from requests.jsonl. `summary["vllm"]` holds the same window under `vllm bench serve`'s keys and, for
those keys, vLLM's own definitions (vllm/benchmarks/serve.py: calculate_metrics), which differ from ctxkit's in
two places: ITL per chunk, and duration from the start of the send loop to the end of the last stream.

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
import pandas as pd

from ctxkit.params import SLOParams
from ctxkit.records import RequestRecord, failures

PERCENTILES = (50, 90, 95, 99)
NS_PER_MS = 1e6


def _ms(ns: float) -> float:
    return ns / NS_PER_MS


def _first_ns(rec: RequestRecord) -> int:
    """The first token's time of a request known to have one."""
    assert rec.t_first_ns is not None
    return rec.t_first_ns


def stats(values: Iterable[Optional[float]]) -> dict[str, Any]:
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
    ttft = _ms(rec.t_first_ns - rec.t_send_ns) if rec.t_first_ns is not None else None
    ttft_sched = _ms(rec.t_first_ns - rec.t_sched_ns) if rec.t_first_ns is not None and rec.t_sched_ns else None
    n_out = rec.n_out or sum(rec.chunk_tokens)
    tpot = None
    if rec.t_first_ns is not None and rec.t_last_ns is not None and n_out > 1:
        tpot = _ms(rec.t_last_ns - rec.t_first_ns) / (n_out - 1)
    e2e = _ms(rec.t_last_ns - rec.t_send_ns) if rec.t_last_ns is not None else None
    ntpot = e2e / n_out if e2e is not None and n_out > 0 else None
    lag = _ms(rec.t_send_ns - rec.t_sched_ns) if rec.t_sched_ns else None
    itl: list[float] = []
    for i in range(1, len(rec.chunk_times_ns)):
        k = max(1, rec.chunk_tokens[i])
        itl.extend([_ms(rec.chunk_times_ns[i] - rec.chunk_times_ns[i - 1]) / k] * k)
    return RequestLatency(ttft, ttft_sched, tpot, e2e, ntpot, lag, tuple(itl))


@dataclass(frozen=True)
class SLO:
    """Per-request service-level objectives in ms; None means no objective on that metric."""
    ttft_ms: Optional[float] = None
    tpot_ms: Optional[float] = None
    e2e_ms: Optional[float] = None

    def misses(self, lat: RequestLatency) -> tuple[bool, bool, bool]:
        """(TTFT, TPOT, E2E) over their objectives, for a finished request. A one-token output has no TPOT and
        cannot miss it (vLLM's benchmark counts its TPOT as 0), an output without tokens does; a missing TTFT or E2E
        is a miss."""
        def over(limit: Optional[float], value: Optional[float]) -> bool:
            return limit is not None and (value is None or value > limit)
        # no TPOT: met if one token came (nothing to pace), missed if none did
        tpot_over = self.tpot_ms is not None and (lat.tpot_ms > self.tpot_ms if lat.tpot_ms is not None
                                                  else lat.ttft_ms is None)
        return over(self.ttft_ms, lat.ttft_ms), tpot_over, over(self.e2e_ms, lat.e2e_ms)

    def met(self, rec: RequestRecord, lat: RequestLatency) -> bool:
        return rec.ok and not any(self.misses(lat))

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
        "first_errors": failures(measured),
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
    summary["vllm"] = vllm_metrics(records, slo)
    return summary


def vllm_metrics(records: list[RequestRecord], slo: Optional[SLO] = None) -> dict[str, Any]:
    """`vllm bench serve`'s result keys with its definitions, from the same records (warmup excluded):
    ttft = first chunk with choices - send; e2el = last such chunk - send; tpot = (e2el - ttft) / (n_out - 1) for
    n_out > 1 (n_out from usage); itl = every gap between consecutive choice chunks, undivided; duration = from the
    start of the send loop (the earliest scheduled send) to the end of the last stream, failed requests included;
    goodput counts a request with n_out <= 1 as TPOT 0; percentiles by numpy's linear interpolation, std over the
    population."""
    measured = [r for r in records if not r.warmup]
    done = [r for r in measured if r.ok and r.t_first_ns is not None]
    ttft = [_ms(_first_ns(r) - r.t_send_ns) for r in done]
    e2el = [_ms((r.t_last_ns or _first_ns(r)) - r.t_send_ns) for r in done]
    all_tpot = [(e - t) / (r.n_out - 1) if r.n_out > 1 else 0.0 for r, t, e in zip(done, ttft, e2el)]
    tpot = [x for r, x in zip(done, all_tpot) if r.n_out > 1]
    itl = [_ms(b - a) for r in done for a, b in zip(r.chunk_times_ns, r.chunk_times_ns[1:])]
    starts = [r.t_sched_ns or r.t_send_ns for r in measured if r.t_send_ns]
    ends = [r.t_end_ns for r in measured if r.t_end_ns]
    duration = (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    n_in, n_out = sum(r.usage_prompt_tokens or r.prompt_tokens for r in done), sum(r.n_out for r in done)
    out: dict[str, Any] = {"completed": len(done), "failed": len(measured) - len(done), "duration": duration,
                           "total_input_tokens": n_in, "total_output_tokens": n_out,
                           "request_throughput": per_s(len(done)), "output_throughput": per_s(n_out),
                           "total_token_throughput": per_s(n_in + n_out)}
    if slo is not None:
        good = sum(1 for t, p, e in zip(ttft, all_tpot, e2el)
                   if all(lim is None or v <= lim for lim, v in ((slo.ttft_ms, t), (slo.tpot_ms, p), (slo.e2e_ms, e))))
        out["request_goodput"] = per_s(good)
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        arr = np.asarray(values or [0.0], dtype=float)      # vLLM reports 0 for an empty sample
        out[f"mean_{name}_ms"], out[f"median_{name}_ms"] = float(arr.mean()), float(np.median(arr))
        out[f"std_{name}_ms"] = float(arr.std())
        for p in PERCENTILES:
            out[f"p{p}_{name}_ms"] = float(np.percentile(arr, p))
    out["max_output_tokens_per_s"], out["max_concurrent_requests"] = _peak_per_second(done)
    return out


def _peak_per_second(done: list[RequestRecord]) -> tuple[float, int]:
    """vLLM's max_output_tokens_per_s and max_concurrent_requests: one-second buckets from the earliest send."""
    if not done:
        return 0.0, 0
    t0 = min(r.t_send_ns for r in done)
    end = max(r.t_last_ns or _first_ns(r) for r in done)
    buckets = int(math.ceil((end - t0) / 1e9)) + 1
    tokens, active = np.zeros(buckets), np.zeros(buckets)
    for r in done:
        for t in r.chunk_times_ns:
            tokens[int((t - t0) // 1_000_000_000)] += 1
        first, last = int((r.t_send_ns - t0) // 1e9), int(((r.t_last_ns or _first_ns(r)) - t0) // 1e9)
        active[first:last + 1] += 1
    return float(tokens.max()), int(active.max())


def slo_of(slo: SLOParams) -> Optional[SLO]:
    """The SLO a parameters block asks for, or None when it sets no objective."""
    if slo.ttft_ms is None and slo.tpot_ms is None and slo.e2e_ms is None:
        return None
    return SLO(slo.ttft_ms, slo.tpot_ms, slo.e2e_ms)


# (client metric in summarize(), server histogram in server_metrics.HISTOGRAMS)
CLIENT_SERVER_PAIRS = {"ttft_ms": "ttft", "tpot_ms": "tpot", "e2e_ms": "e2e"}


def client_vs_server(latency: dict[str, Any], server: dict[str, dict[str, Any]], single_hop: bool) -> dict[str, Any]:
    """Client mean minus the servers' own mean (from their histograms, same window) for TTFT, TPOT and E2E: what
    the HTTP path and the client add. Servers behind an aggregated router each serve whole requests, so their
    histograms pool; a disaggregated request spans two servers, whose histograms describe neither half alone."""
    if not single_hop:
        return {"comparable": False, "reason": "a disaggregated request spans a prefill and a decode server"}
    out: dict[str, Any] = {"comparable": True}
    for ours, short in CLIENT_SERVER_PAIRS.items():
        count = sum(s.get(f"{short}_count") or 0 for s in server.values())
        total = sum((s.get(f"{short}_count") or 0) * (s.get(f"mean_{short}_ms") or 0) for s in server.values())
        client = latency[ours]["avg"]
        server_mean = total / count if count else None
        out[ours] = {"client_mean": client, "server_mean": server_mean, "server_count": count,
                     "client_minus_server": client - server_mean if client is not None and server_mean is not None
                     else None}
    return out


def requests_frame(records: list[RequestRecord]) -> pd.DataFrame:
    """One row per request: status, lengths, TTFT, TPOT, E2E, client lag, error and the record's tags."""
    rows = []
    for r in records:
        lat = request_latency(r)
        rows.append({"request_id": r.request_id, "warmup": r.warmup, "status": r.status,
                     "prompt_tokens": r.prompt_tokens, "output_tokens": r.n_out, "ttft_ms": lat.ttft_ms,
                     "ttft_sched_ms": lat.ttft_sched_ms, "tpot_ms": lat.tpot_ms, "e2e_ms": lat.e2e_ms,
                     "client_lag_ms": lat.client_lag_ms, "error": r.error, **r.tags})
    return pd.DataFrame(rows)


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
