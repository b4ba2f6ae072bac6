"""E5 long context, part `cost`: what a longer context costs a request, at batch 1 and at a fixed batch.

Per context length L (`cost_lens`): `cost_requests` requests one at a time (batch 1), then one wave of `cost_batch`
requests sent together (they decode together once their prefills are done; the first to finish prefill still
shares a few steps with the others' prefill chunks); fresh prompts throughout (no prefix-cache hits),
`cost_output_len` tokens each.
Two fits, least squares:
- TTFT at batch 1 against L: a + b L + c L^2. The linear term is the weights' work per token (and the MLPs); the
  quadratic one is attention over the prompt, which grows with L^2 and dominates at long contexts. Reported with the
  quadratic term's share of the fitted TTFT at the longest L, and R^2.
- TPOT against the KV bytes a decode step reads: requests decoding x (L + output/2) x the card's KV bytes per
  token (the mean over a request's decode). The slope is milliseconds per byte of KV read; its inverse is the KV
  read rate the steps achieve; the intercept is the step's cost with no KV (the weights' read, on GPUs). Every row is
  fitted with its steady window (`steady`): the tokens after the wave's last first token and its stream's catch-up
  chunk, when no prefill shares the steps, against the requests still decoding there (time-averaged). The
  whole-request TPOT is kept beside it but not fitted: at 65K-130K tokens on an H200 the four prefills of a batch
  run one after another for 10-40 s, and the first requests' TPOT is mostly the others' prefill chunks (84 and
  252 ms against 6-7 ms at batch 1); and even at batch 1 it counts from a first token that reached the client late
  (settled_ns).
On GPUs with known peaks, each row's p50 TTFT and TPOT also against E1's physical floors (weights' FLOPs for the
prompt, weights' bytes for a step).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ctxkit.backends.base import ServingBackend
from ctxkit.experiments.common import ms_text
from ctxkit.experiments.e1_latency import floors, prefill_floor_ms
from ctxkit.load.engine import measure
from ctxkit.load.workloads import LengthDist, synthetic
from ctxkit.models import ModelCard
from ctxkit.params import E5Params, LoadParams
from ctxkit.records import JsonlWriter, RequestRecord


def measure_cost(params: E5Params, backend: ServingBackend, card: ModelCard, out: JsonlWriter,
                 log=print) -> list[dict[str, Any]]:
    """One row per (L, batch): p50 TTFT and TPOT, the KV bytes a step reads."""
    per_token = card.kv_bytes_per_token(params.server.dtype)
    rows = []
    for i, length in enumerate(params.cost_lens):
        # the fixed batch is one wave sent together: a closed loop would start new prefills among the decodes,
        # and their interference (part c's subject) would enter TPOT here
        for batch, n in ((1, params.cost_requests), (params.cost_batch, params.cost_batch)):
            items = synthetic(n, LengthDist("fixed", length), LengthDist("fixed", params.cost_output_len),
                              vocab_size=card.vocab_size, seed=params.seed * 7919 + 2 * i + (batch > 1),
                              id_prefix=f"cost-L{length}b{batch}")
            records, prof = measure(backend, items, LoadParams(arrival="concurrency", concurrency=batch, warmup_requests=0),
                              seed=params.seed, timeout_s=params.request_timeout_s, slo=None, out=out,
                              label=f"e5 cost L={length} batch={batch}",
                              tags={"part": "cost", "context_len": length, "batch": batch})
            lat = prof["latency"]
            rows.append({"context_len": length, "batch": batch, "requests": lat["requests"], "failed": lat["failed"], "errors": lat["first_errors"],
                         "p50_ttft_ms": lat["ttft_ms"]["p50"], "p50_tpot_ms": lat["tpot_ms"]["p50"],
                         "kv_bytes_per_step": batch * (length + params.cost_output_len / 2) * per_token})
            if batch > 1:
                rows[-1]["p50_tpot_steady_ms"], rows[-1]["steady_running"] = steady(records)
            else:                                 # one at a time: each request is its own wave
                alone = [t for t, _ in map(steady, ([r] for r in records)) if t is not None]
                rows[-1]["p50_tpot_steady_ms"] = float(np.median(alone)) if alone else None
                rows[-1]["steady_running"] = 1.0 if alone else None
            log(f"[e5] cost L={length} batch={batch}: p50 TTFT {ms_text(lat['ttft_ms']['p50'])}, "
                f"p50 TPOT {ms_text(lat['tpot_ms']['p50'])}, {lat['failed']} failed")
    add_floors(rows, card)
    return rows


def settled_ns(r: RequestRecord) -> int:
    """When a request's stream has caught up: its second chunk. The first chunk carries the prompt's token ids
    (`return_token_ids`); at 130,000 tokens, about 1 MB of JSON, and the engine goes on generating while the API server
    sends it: on an H200 the next chunk came 9-12 ms later holding 15-24 tokens. Counting from the first token would
    spread those tokens' generation time over nothing and put TPOT 25% low."""
    return r.chunk_times_ns[1] if len(r.chunk_times_ns) > 1 else r.chunk_times_ns[0]


def steady(records: list[RequestRecord]) -> tuple[Optional[float], Optional[float]]:
    """Once every request of a wave has its first token and its stream has caught up (settled_ns): the p50 over
    requests of the time a token took (first chunk after that point to the request's last chunk), and how many
    requests were decoding on average over that window (the first ones may be finishing: at 130,000 tokens on an
    H200, 2.5 of 4). (None, None) when no request had two chunks after it."""
    ok = [r for r in records if r.ok and r.chunk_times_ns]
    if not ok:
        return None, None
    start = max(settled_ns(r) for r in ok)
    end = max(r.chunk_times_ns[-1] for r in ok)
    per = []
    for r in ok:
        after = [(t, n) for t, n in zip(r.chunk_times_ns, r.chunk_tokens) if t >= start]
        tokens = sum(n for _, n in after[1:])
        if len(after) >= 2 and tokens > 0:
            per.append((after[-1][0] - after[0][0]) / 1e6 / tokens)
    if not per or end <= start:
        return None, None
    running = sum(max(0, r.chunk_times_ns[-1] - start) for r in ok) / (end - start)
    return float(np.median(per)), float(running)


def fit_point(row: dict[str, Any]) -> Optional[tuple[float, float]]:
    """(KV bytes a step reads, TPOT ms) a row is fitted with: its steady window (see steady), with the requests
    decoding there (for a fixed batch, not the batch size)."""
    if row.get("p50_tpot_steady_ms") is None:
        return None
    return row["kv_bytes_per_step"] * row["steady_running"] / row["batch"], row["p50_tpot_steady_ms"]


def add_floors(rows: list[dict[str, Any]], card: ModelCard) -> Optional[dict[str, Any]]:
    fl = floors(card)
    for r in rows:
        if fl and r["p50_ttft_ms"] and r["p50_tpot_ms"]:
            r["ttft_over_floor"] = r["p50_ttft_ms"] / prefill_floor_ms(fl, r["context_len"])
            r["tpot_over_floor"] = (r.get("p50_tpot_steady_ms") or r["p50_tpot_ms"]) / fl["decode_floor_ms"]
    return fl


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    total = float(((y - y.mean()) ** 2).sum())
    return coef, (1.0 - float((resid ** 2).sum()) / total) if total > 0 else float("nan")


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """TTFT(L) = a + b L + c L^2 at batch 1; TPOT = d + e x KV bytes per step over every row (fit_point)."""
    one = [r for r in rows if r["batch"] == 1 and r["p50_ttft_ms"] is not None]
    out: dict[str, Any] = {"ttft": None, "tpot": None}
    if len({r["context_len"] for r in one}) >= 3:
        L = np.array([r["context_len"] for r in one], dtype=float)
        (a, b, c), r2 = _lstsq(np.column_stack([np.ones_like(L), L, L ** 2]), np.array([r["p50_ttft_ms"] for r in one]))
        top = L.max()
        out["ttft"] = {"a_ms": float(a), "b_ms_per_token": float(b), "c_ms_per_token2": float(c), "r2": r2,
                       "quadratic_share_at_longest": float(c * top ** 2 / (a + b * top + c * top ** 2)),
                       "longest": int(top)}
    points = [p for p in map(fit_point, rows) if p is not None]
    if len({kv for kv, _ in points}) >= 2:
        kv = np.array([p[0] for p in points], dtype=float)
        (d, e), r2 = _lstsq(np.column_stack([np.ones_like(kv), kv]), np.array([p[1] for p in points]))
        out["tpot"] = {"d_ms": float(d), "e_ms_per_gb": float(e * 1e9), "r2": r2,
                       "kv_read_gb_per_s": float(1e-6 / e) if e > 0 else None}
    return out


def curve(f: dict[str, Any], lengths: np.ndarray) -> np.ndarray:
    return f["a_ms"] + f["b_ms_per_token"] * lengths + f["c_ms_per_token2"] * lengths ** 2


def conclusion(cost: dict[str, Any]) -> str:
    f, rows = cost["fit"], cost["rows"]
    parts = []
    if f["ttft"]:
        t = f["ttft"]
        parts.append(f"At batch 1, TTFT = {t['a_ms']:.1f} + {t['b_ms_per_token'] * 1000:.3f} x 10^-3 L + "
                     f"{t['c_ms_per_token2'] * 1e6:.4f} x 10^-6 L^2 ms (R^2 {t['r2']:.3f}); at {t['longest']:,} "
                     f"tokens the quadratic (attention) term is {100 * t['quadratic_share_at_longest']:.0f}% of it.")
    if f["tpot"]:
        t = f["tpot"]
        rate = f"{t['kv_read_gb_per_s']:.1f} GB/s of KV read" if t["kv_read_gb_per_s"] else "no positive slope"
        parts.append(f"TPOT = {t['d_ms']:.2f} ms + {t['e_ms_per_gb']:.2f} ms per GB of KV a step reads "
                     f"(R^2 {t['r2']:.3f}; {rate}).")
    longest = max(r["context_len"] for r in rows)
    b1 = {r["context_len"]: r for r in rows if r["batch"] == 1}
    shortest = min(b1)
    if b1[longest]["p50_ttft_ms"] and b1[shortest]["p50_ttft_ms"]:
        parts.append(f"From {shortest:,} to {longest:,} tokens, TTFT at batch 1 grew "
                     f"{b1[longest]['p50_ttft_ms'] / b1[shortest]['p50_ttft_ms']:.1f}x.")
    return " ".join(parts)
