"""E5 long context, part `prefix`: what a shared prefix saves, with the server's prefix cache used and not.

Per shared-prefix ratio r (`prefix_ratios`): prompts of `prefix_context_len` tokens whose first r x L tokens are
one prefix shared by every request of the point, the rest unique. One unscored request first (it puts the prefix
in the cache), then `prefix_requests` scored ones, one at a time (TTFT without queueing). Two arms per ratio, each
with its own prefix: cache `on` (plain requests) and `off` (every request with its own vLLM `cache_salt`, so no
request can reuse blocks another one computed: the same server, its cache isolated per request).
Per point: p50 TTFT, and the prefix-cache hit rate the server measured over the scored window
(vllm:prefix_cache_hits / prefix_cache_queries, tokens) against the rate the workload implies: a request can reuse
the shared prefix's whole blocks, never its last prompt token's block, so min(floor(rL / B), floor((L - 1) / B))
x B of its L tokens, B the block size.
"""
from __future__ import annotations

from typing import Any, Optional

from ctxkit.backends.base import ServingBackend
from ctxkit.experiments.common import ms_text
from ctxkit.load.engine import measure
from ctxkit.load.workloads import LengthDist, synthetic
from ctxkit.models import ModelCard
from ctxkit.params import E5Params, LoadParams
from ctxkit.records import JsonlWriter

ARMS = ("on", "off")


def implied_hit_rate(ratio: float, length: int, block: int) -> float:
    shared = int(round(ratio * length))
    return min(shared // block, (length - 1) // block) * block / length


def measure_prefix(params: E5Params, backend: ServingBackend, card: ModelCard, block: Optional[int],
                   out: JsonlWriter, log=print) -> list[dict[str, Any]]:
    length = params.prefix_context_len
    rows = []
    for i, ratio in enumerate(params.prefix_ratios):
        shared = int(round(ratio * length))
        for j, arm in enumerate(ARMS):
            items = synthetic(params.prefix_requests + 1, LengthDist("fixed", length - shared),
                              LengthDist("fixed", params.prefix_output_len), vocab_size=card.vocab_size,
                              seed=params.seed * 104_729 + 2 * i + j, prefix_len=shared,
                              id_prefix=f"prefix-r{ratio:g}-{arm}")
            if arm == "off":
                for it in items:
                    it.body["cache_salt"] = it.request_id
            _, prof = measure(backend, items[1:], LoadParams(arrival="concurrency", concurrency=1, warmup_requests=0),
                              seed=params.seed, timeout_s=params.request_timeout_s, slo=None, out=out,
                              warmup=items[:1], label=f"e5 prefix r={ratio:g} cache {arm}",
                              tags={"part": "prefix", "prefix_ratio": ratio, "cache": arm})
            srv = [d for d in prof["server"].values() if isinstance(d, dict)]
            hits = sum(float(d.get("prefix_cache_hits") or 0) for d in srv)
            queries = sum(float(d.get("prefix_cache_queries") or 0) for d in srv)
            lat = prof["latency"]
            row = {"prefix_ratio": ratio, "cache": arm, "shared_tokens": shared, "requests": lat["requests"],
                   "failed": lat["failed"], "errors": lat["first_errors"], "p50_ttft_ms": lat["ttft_ms"]["p50"], "hit_tokens": hits,
                   "query_tokens": queries, "hit_rate": hits / queries if queries else None,
                   "implied_hit_rate": (implied_hit_rate(ratio, length, block) if arm == "on" else 0.0)
                   if block else None}
            rows.append(row)
            log(f"[e5] prefix r={ratio:g} cache {arm}: p50 TTFT {ms_text(row['p50_ttft_ms'], 1)}, hit rate "
                f"{'-' if row['hit_rate'] is None else format(row['hit_rate'], '.3f')} (implied "
                f"{'-' if row['implied_hit_rate'] is None else format(row['implied_hit_rate'], '.3f')})")
    return rows


def hits_follow(rows: list[dict[str, Any]], share: float = 0.8, off_at_most: float = 0.05) -> tuple[bool, str]:
    """With the cache on, measured hits are at least `share` of the implied rate at every ratio; off, near 0."""
    on = [r for r in rows if r["cache"] == "on" and r["implied_hit_rate"]]
    off = [r for r in rows if r["cache"] == "off"]
    good_on = sum(1 for r in on if r["hit_rate"] is not None and r["hit_rate"] >= share * r["implied_hit_rate"])
    good_off = sum(1 for r in off if r["hit_rate"] is not None and r["hit_rate"] <= off_at_most)
    return good_on == len(on) and good_off == len(off), \
        f"cache on: hits >= {share:g} x implied at {good_on}/{len(on)} ratios; off: <= {off_at_most:g} at {good_off}/{len(off)}"


def conclusion(rows: list[dict[str, Any]]) -> str:
    top = max(r["prefix_ratio"] for r in rows)
    on = next(r for r in rows if r["prefix_ratio"] == top and r["cache"] == "on")
    off = next(r for r in rows if r["prefix_ratio"] == top and r["cache"] == "off")
    if not (on["p50_ttft_ms"] and off["p50_ttft_ms"] and on["hit_rate"] is not None):
        return ""
    return (f"With {100 * top:g}% of each prompt shared, the cache served {100 * on['hit_rate']:.0f}% of prompt "
            f"tokens (the workload implies {100 * (on['implied_hit_rate'] or 0):.0f}%) and p50 TTFT was "
            f"{on['p50_ttft_ms']:.1f} ms against {off['p50_ttft_ms']:.1f} ms with every request's cache isolated "
            f"({off['p50_ttft_ms'] / on['p50_ttft_ms']:.1f}x).")
