"""E1 latency vs prompt length.

One server; after a warm-up, `requests_per_len` requests per prompt length, sent one at a time (closed loop of
one: no queueing), each with a fresh prompt (no prefix-cache hits), fixed output length with ignore_eos.
Per length: TTFT and TPOT distributions. Where the model card and the GPU are known, the physical floors:
prefill >= 2 x parameters x tokens FLOP at the GPU's bf16 peak; decode >= weight bytes / HBM bandwidth a token.
"""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from ctxkit import plots
from ctxkit.collectors.gpu import GPUSampler
from ctxkit.collectors.latency import request_latency, stats
from ctxkit.experiments.common import check, make_backend
from ctxkit.hardware import gpu_inventory, peak_for
from ctxkit.load.engine import measure
from ctxkit.load.workloads import LengthDist, synthetic
from ctxkit.models import ModelCard
from ctxkit.params import E1Params, LoadParams
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder
from ctxkit.schedulers.placement import server_gpu_roles


def floors(card: ModelCard) -> Optional[dict[str, Any]]:
    """Physical floors on the first GPU NVML reports, if it is in the peak table; None on CPU or unknown GPUs."""
    inv = gpu_inventory()
    if not inv["available"]:
        return None
    found = peak_for(inv["devices"][0]["name"])
    if not found:
        return None
    name, peak = found
    return {"gpu": name, "bf16_flops": peak["bf16_flops"], "hbm_bytes_per_s": peak["hbm_bytes_per_s"],
            "params": card.parameter_count(), "weight_bytes": card.weight_bytes(),
            "decode_floor_ms": 1000.0 * card.weight_bytes() / peak["hbm_bytes_per_s"]}


def prefill_floor_ms(f: dict[str, Any], tokens: int) -> float:
    return 1000.0 * 2 * f["params"] * tokens / f["bf16_flops"]


def sweep(params: E1Params, run: RunFolder, log=print) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Start the server, warm up, then each length in turn; records stream to requests.jsonl."""
    card = ModelCard.load(params.server.model)
    backend = make_backend(params, "server", run)
    sampler = GPUSampler(params.gpu_sample_interval_s, roles=server_gpu_roles(params.server.env, params.server.extra_args))
    records: list[RequestRecord] = []
    server_deltas: dict[str, Any] = {}
    one_at_a_time = LoadParams(arrival="concurrency", concurrency=1, warmup_requests=0)
    with backend, sampler, JsonlWriter(run.path / "requests.jsonl") as out:
        log(f"[e1] server up at {backend.base_url} ({backend.version().get('version')})")
        warm = synthetic(max(1, params.warmup_requests), LengthDist("fixed", min(params.prompt_lens)),
                         LengthDist("fixed", params.output_len), vocab_size=card.vocab_size,
                         seed=params.seed + 99_991, id_prefix="warmup")
        for k, n in enumerate(params.prompt_lens):
            items = synthetic(params.requests_per_len, LengthDist("fixed", n), LengthDist("fixed", params.output_len),
                              vocab_size=card.vocab_size, seed=params.seed * 1000 + k, id_prefix=f"len{n}")
            log(f"[e1] point {k + 1}/{len(params.prompt_lens)}: prompt length {n}")
            recs, prof = measure(backend, items, one_at_a_time, seed=params.seed, timeout_s=params.request_timeout_s,
                                 slo=None, out=out, warmup=warm if k == 0 else None, label=f"e1 len {n}",
                                 tags={"prompt_len": n})
            records += recs
            server_deltas[str(n)] = prof["server"][backend.name]
        describe = backend.describe()
    gpu = sampler.stop()
    sampler.write_timeline(run.artifacts / "e1_gpu_timeline.csv")
    return records, {"server": describe, "server_metrics": server_deltas, "gpu": gpu}


def curve(records: list[RequestRecord], fl: Optional[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    measured = [r for r in records if not r.warmup]
    for n in sorted({r.tags["prompt_len"] for r in measured}):
        recs = [r for r in measured if r.tags["prompt_len"] == n]
        lats = [request_latency(r) for r in recs if r.ok]
        ttft, tpot = stats(l.ttft_ms for l in lats), stats(l.tpot_ms for l in lats)
        row: dict[str, Any] = {"prompt_len": n, "count": len(lats), "failed": len(recs) - len(lats)}
        for name, s in (("ttft", ttft), ("tpot", tpot)):
            for stat in ("p50", "p95", "avg", "min", "max"):
                row[f"{stat}_{name}_ms"] = s[stat]
        if fl:
            row["prefill_floor_ms"] = prefill_floor_ms(fl, n)
            row["decode_floor_ms"] = fl["decode_floor_ms"]
            row["ttft_over_floor"] = row["p50_ttft_ms"] / row["prefill_floor_ms"] if row["p50_ttft_ms"] else None
            row["tpot_over_floor"] = row["p50_tpot_ms"] / row["decode_floor_ms"] if row["p50_tpot_ms"] else None
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(params: E1Params, run: RunFolder, records: list[RequestRecord], extra: dict[str, Any],
              table: pd.DataFrame, fl: Optional[dict[str, Any]]) -> dict[str, Any]:
    measured = [r for r in records if not r.warmup]
    failed = [r for r in measured if not r.ok]
    lats = [request_latency(r) for r in measured if r.ok]
    p50 = list(table["p50_ttft_ms"])
    rises = len(p50) > 1 and p50[-1] > p50[0]
    summary = {
        "experiment": "e1_latency",
        "run_id": run.run_id,
        "checks": {
            "success": check(not failed, f"{len(measured) - len(failed)}/{len(measured)} requests completed"),
            "backend_real": check(extra["server"].get("mode") == "real",
                                  f"backend mode {extra['server'].get('mode')}, version "
                                  f"{extra['server'].get('version', {}).get('version')}"),
            "ttft_rises_with_prompt_length": check(
                rises, f"p50 TTFT {p50[0]:.1f} ms at {table['prompt_len'].iloc[0]} tokens -> {p50[-1]:.1f} ms at "
                       f"{table['prompt_len'].iloc[-1]} tokens" if p50 else "no data"),
        },
        "profiling": {
            "latency": {"ttft_ms": stats(l.ttft_ms for l in lats), "tpot_ms": stats(l.tpot_ms for l in lats),
                        "e2e_ms": stats(l.e2e_ms for l in lats)},
            "server": extra["server_metrics"],
            "gpu": extra["gpu"],
        },
        "floors": fl or {"available": False, "reason": "no GPU with known peak numbers (floors are GPU-only)"},
        "sweep": table.to_dict(orient="records"),
        "servers": [extra["server"]],
    }
    run.write_json("summary.json", summary)
    return summary


def write_artifacts(run: RunFolder, table: pd.DataFrame) -> list:
    """The curve CSV and the two SVG plots; returns the figures for the notebook to show."""
    table.to_csv(run.artifacts / "e1_latency_curve.csv", index=False)
    return [plots.latency_curve(table, "ttft", run.artifacts / "e1_ttft_curve.svg", "TTFT vs prompt length"),
            plots.latency_curve(table, "tpot", run.artifacts / "e1_tpot_curve.svg", "TPOT vs prompt length")]
