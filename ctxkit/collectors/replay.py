"""Trace replay fidelity (summary.replay): did the replay send what the trace describes, when it says?

- lengths: every prompt's token count as the trace row's input_length, and as the server counted it (usage);
- prefix reuse: the tokens the trace implies a prefix cache can reuse (a request's leading 512-token blocks whose
  hash ids were sent earlier in the replay: equal ids are equal token blocks, see load/workloads.from_trace), against
  the prefix-cache hits the servers measured over the same window (vllm:prefix_cache_hits / _queries);
- timing: the send lag against the trace's timestamps (send time - scheduled time), when replayed on them, and how
  the rows group in time (rows sharing a timestamp are sent together: a burst, which scaling the rate keeps).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Optional

import numpy as np

from ctxkit.records import RequestRecord

TRACE_BLOCK_TOKENS = 512


def implied_reuse(items: Iterable[Any]) -> tuple[int, int]:
    """(reusable tokens, prompt tokens) over items in send order: per request, the leading run of its 512-token
    blocks whose hash ids earlier requests sent, as many tokens of each as were sent before (a request whose prompt
    ended inside a block sent only part of it); a prefix cache reuses a prefix, never a block after a miss."""
    sent_before: dict[Any, int] = {}
    reusable = total = 0
    for it in items:
        ids, n = list(it.tags.get("hash_ids") or []), len(it.prompt)
        total += n
        reuse = 0
        for k, h in enumerate(ids):
            here = min(TRACE_BLOCK_TOKENS, n - k * TRACE_BLOCK_TOKENS)
            if here <= 0:
                break
            before = sent_before.get(h, 0)
            reuse += min(here, before)
            if before < here:
                break
        reusable += min(reuse, max(0, n - 1))     # the last prompt token is always computed
        for k, h in enumerate(ids):
            here = min(TRACE_BLOCK_TOKENS, n - k * TRACE_BLOCK_TOKENS)
            if here > 0:
                sent_before[h] = max(sent_before.get(h, 0), here)
    return reusable, total


def _server_prefix(server: dict[str, Any]) -> tuple[float, float]:
    hits = sum(float(d.get("prefix_cache_hits") or 0) for d in server.values() if isinstance(d, dict))
    queries = sum(float(d.get("prefix_cache_queries") or 0) for d in server.values() if isinstance(d, dict))
    return hits, queries


def arrival_bursts(items: list[Any]) -> dict[str, Any]:
    """How the rows' timestamps group: rows sharing one timestamp arrive as a burst. Scaling a trace's rate divides
    the gaps between timestamps, never a burst, so a burst's own contention is there at every rate."""
    counts = Counter(it.arrival_ms for it in items if it.arrival_ms is not None)
    in_bursts = sum(c for c in counts.values() if c > 1)
    return {"timestamps": len(counts), "largest": max(counts.values(), default=0),
            "rows_in_bursts": in_bursts / sum(counts.values()) if counts else None}


def fidelity(items: list[Any], records: list[RequestRecord], server: dict[str, Any], arrival: str) -> dict[str, Any]:
    """The replay's fidelity block; `server`: each server's metric deltas over the measured window."""
    by_id = {r.request_id: r for r in records if not r.warmup}
    sent = [it for it in items if it.request_id in by_id]
    wrong = [it.request_id for it in sent if len(it.prompt) != it.tags.get("input_length", len(it.prompt))]
    counted = [it.request_id for it in sent
               if by_id[it.request_id].usage_prompt_tokens not in (None, len(it.prompt))]
    reusable, total = implied_reuse(sent)
    hits, queries = _server_prefix(server)
    lags = [(r.t_send_ns - r.t_sched_ns) / 1e6 for r in by_id.values() if r.t_send_ns and r.t_sched_ns]
    lag: Optional[dict[str, float]] = None
    if lags:
        lag = {"p50_ms": float(np.percentile(lags, 50)), "p99_ms": float(np.percentile(lags, 99)),
               "max_ms": float(max(lags))}
    return {
        "arrival": arrival,
        "on_trace_timestamps": arrival == "trace",
        "requests": len(sent),
        "lengths_exact": not wrong and not counted,
        "length_mismatches": wrong[:10],
        "server_counted_differently": counted[:10],
        "prompt_tokens": total,
        "implied_reusable_tokens": reusable,
        "implied_reuse": reusable / total if total else None,
        "measured_prefix_hits": hits,
        "measured_prefix_queries": queries,
        "measured_over_implied": hits / reusable if reusable else None,
        "send_lag": lag,
        "arrival_bursts": arrival_bursts(sent) if arrival == "trace" else None,
    }
