"""Calibration of the placement model (ctxkit.plan): one server's step costs, measured as E5's cost part measures
them, fitted into a calibration file (ctxkit.plan.costs.Calibration) beside the run's other files.

- Prefill: each length of `prefill_lens`, `prefill_requests` prompts one at a time (no queueing, fresh prompts so
  nothing comes from the prefix cache), their median TTFT a point of TTFT(L) = a + b L + c L^2 (the median: on a
  shared CPU one request in four can take twice as long).
- Decode: each length of `decode_lens` and each batch of `decode_batches`, one wave of that many requests sent
  together; over the wave's steady window (E5's `steady`: every request past its first token and caught up, no
  prefill sharing the steps) the p50 time a token took is a step's time, against the requests decoding there and
  the KV tokens they read: step = d + f seqs + e kv_tokens.
- Limits: KV capacity from the server's cache_config_info (blocks x block size); max_num_seqs and
  max_num_batched_tokens from the server's flags or the parameters, else vLLM's defaults for the device (assumed:
  an endpoint's flags are not known), and the file says which.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from ctxkit import __version__
from ctxkit.backends.base import ServingBackend
from ctxkit.collectors.server_metrics import cache_config, parse
from ctxkit.experiments.e5_cost import steady
from ctxkit.load.engine import measure
from ctxkit.load.workloads import LengthDist, synthetic
from ctxkit.models import ModelCard
from ctxkit.params import BenchParams, CalibrateParams, LoadParams, flag_value
from ctxkit.plan.costs import Calibration, EngineLimits, Transfer, fit_linear
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder
from ctxkit.runs.placements import compilation

Log = Callable[[str], None]


def _wave(params: BenchParams, backend: ServingBackend, card: ModelCard, out: JsonlWriter, length: int,
          n: int, batch: int, output_len: int, tag: str) -> list[RequestRecord]:
    # fresh prompts for every wave: prompts drawn from one seed share their heads across lengths, and vLLM's prefix
    # cache would serve them (a TTFT that is not a prefill's)
    seed = int(np.random.SeedSequence([params.seed, len(tag), length, batch]).generate_state(1)[0])
    items = synthetic(n, LengthDist("fixed", length), LengthDist("fixed", output_len), vocab_size=card.vocab_size,
                      seed=seed, id_prefix=f"cal-{tag}-L{length}b{batch}")
    records, _ = measure(backend, items, LoadParams(arrival="concurrency", concurrency=batch, warmup_requests=0),
                         seed=params.seed, timeout_s=params.request_timeout_s, slo=None, out=out,
                         label=f"calibrate {tag} L={length} batch={batch}",
                         tags={"part": f"calibrate-{tag}", "context_len": length, "batch": batch})
    failed = [r for r in records if not r.ok]
    if failed:
        raise RuntimeError(f"calibration {tag} L={length} batch={batch}: {len(failed)} of {len(records)} requests "
                           f"failed ({failed[0].status}: {failed[0].error})")
    return records


def measure_prefill(params: BenchParams, c: CalibrateParams, backend: ServingBackend, card: ModelCard,
                    out: JsonlWriter, log: Log) -> list[dict[str, float]]:
    rows = []
    for length in c.prefill_lens:
        records = _wave(params, backend, card, out, length, c.prefill_requests, 1, 2, "prefill")
        ttfts = [(r.t_first_ns - r.t_send_ns) / 1e6 for r in records if r.t_first_ns]
        rows.append({"one": 1.0, "L": float(length), "L2": float(length) ** 2, "ttft_ms": float(np.median(ttfts))})
        log(f"[calibrate] prefill L={length}: p50 TTFT {np.median(ttfts):.1f} ms")
    return rows


def measure_decode(params: BenchParams, c: CalibrateParams, backend: ServingBackend, card: ModelCard,
                   out: JsonlWriter, log: Log) -> list[dict[str, float]]:
    rows = []
    for length in c.decode_lens:
        for batch in c.decode_batches:
            records = _wave(params, backend, card, out, length, batch, batch, c.output_len, "decode")
            step_ms, running = steady(records)
            if step_ms is None or running is None:
                log(f"[calibrate] decode L={length} batch={batch}: no steady window (output_len too short?)")
                continue
            rows.append({"one": 1.0, "seqs": running, "kv_tokens": running * (length + c.output_len / 2),
                         "step_ms": step_ms})
            log(f"[calibrate] decode L={length} batch={batch}: {step_ms:.2f} ms a step, {running:.1f} decoding")
    return rows


def vllm_defaults(gpu: Optional[dict[str, Any]]) -> tuple[int, int, bool]:
    """vLLM's own (max_num_seqs, max_num_batched_tokens, async scheduling) for its OpenAI server (0.24 to 0.32,
    engine/arg_utils.py): on a GPU of 70 GiB or more other than an A100, 1,024 and 8,192; on a smaller GPU 256 and
    2,048; on the CPU 128 and 2,048, scheduled synchronously."""
    if gpu is None:
        return 128, 2048, False
    big = gpu["memory_total_bytes"] >= 70 * 2 ** 30 and "A100" not in gpu["name"]
    return (1024, 8192, True) if big else (256, 2048, True)


def limits(params: BenchParams, c: CalibrateParams, backend: ServingBackend,
           gpu: Optional[dict[str, Any]]) -> tuple[EngineLimits, str]:
    """The server's scheduler limits and KV capacity, and where the limits came from."""
    config = cache_config(parse(backend.metrics()))
    blocks, size = int(float(config.get("num_gpu_blocks", 0) or 0)), int(float(config.get("block_size", 16) or 16))
    if blocks <= 0:
        raise RuntimeError("the server reports no KV cache size (vllm:cache_config_info num_gpu_blocks): "
                           "calibration needs a vLLM server")
    flags = params.server.extra_args
    default_seqs, default_budget, default_async = vllm_defaults(gpu)
    seqs = flag_value(flags, "--max-num-seqs") or c.max_num_seqs
    budget = flag_value(flags, "--max-num-batched-tokens") or c.max_num_batched_tokens
    source = ("the server's flags or calibrate parameters" if seqs and budget else
              "vLLM's defaults for this device, assumed (the server's flags set none)")
    return EngineLimits(max_num_seqs=seqs or default_seqs, max_num_batched_tokens=budget or default_budget,
                        kv_capacity_tokens=blocks * size, block_size=size,
                        chunked_prefill="--no-enable-chunked-prefill" not in flags,
                        compiled=compilation(params.model_dump()) == "compiled",
                        async_scheduling=default_async and "--no-async-scheduling" not in flags), source


def transfer(c: CalibrateParams, card: ModelCard, dtype: str) -> Optional[Transfer]:
    if c.handoff_ms is None or c.transfer_gb_per_s is None:
        return None
    return Transfer(kv_bytes_per_token=card.kv_bytes_per_token(dtype), per_handoff_ms=c.handoff_ms,
                    gb_per_s=c.transfer_gb_per_s, source=c.transfer_source or "calibrate parameters")


def fit(points: dict[str, list[dict[str, float]]], limits_and_source: tuple[EngineLimits, str],
        transfer_figures: Optional[Transfer], *, model: str, device: str, engine: str, run_id: str,
        commit: Optional[str]) -> Calibration:
    prefill, decode = points["prefill"], points["decode"]
    engine_limits, limits_from = limits_and_source
    return Calibration(model=model, device=device, engine=engine, limits=engine_limits, limits_from=limits_from,
                       prefill=fit_linear(["one", "L", "L2"], prefill, [r["ttft_ms"] for r in prefill]),
                       decode=fit_linear(["one", "seqs", "kv_tokens"], decode, [r["step_ms"] for r in decode]),
                       transfer=transfer_figures, runs=[run_id], commit=commit, ctxkit=__version__)


def into_run(params: BenchParams, backend: ServingBackend, run: RunFolder, csv_name: str,
             log: Log = print) -> Calibration:
    """Start the backend, measure, stop it; the points into artifacts/<csv_name> (first: a fit that fails keeps
    them), the calibration into calibration.json. The device is the one GPU the server had (or the CPU)."""
    assert params.calibrate is not None
    meta = json.loads((run.path / "run_metadata.json").read_text())
    gpus = meta["hardware"]["gpus"]["devices"] if meta["hardware"]["gpus"]["available"] else []
    device = f"1 x {gpus[0]['name']}" if gpus else f"cpu: {meta['hardware']['cpu']} ({meta['hardware']['cpu_count']} cores)"
    engine = f"vLLM {meta['versions'].get('vllm')} ({compilation(params.model_dump())})"
    c, card = params.calibrate, ModelCard.load(params.server.model)
    with backend, JsonlWriter(run.path / "calibration_requests.jsonl") as out:
        points = {"prefill": measure_prefill(params, c, backend, card, out, log),
                  "decode": measure_decode(params, c, backend, card, out, log)}
        engine_limits = limits(params, c, backend, gpus[0] if gpus else None)
    pd.concat([pd.DataFrame(rows).assign(part=part) for part, rows in points.items()]) \
        .to_csv(run.artifacts / csv_name, index=False)
    cal = fit(points, engine_limits, transfer(c, card, params.server.dtype), model=card.name, device=device,
              engine=engine, run_id=run.run_id, commit=meta["git"]["commit"])
    cal.save(run.path / "calibration.json")
    return cal
