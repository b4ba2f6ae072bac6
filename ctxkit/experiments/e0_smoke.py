"""E0 smoke and reproducibility.

One request set, half greedy and half seeded sampling, sent one at a time through the streaming completions API
to a freshly started real vLLM server; then the same set to a second freshly started server. Checks: every request
succeeded; the backend was strict (real unless simulation was explicitly allowed); every server was real vLLM
(from /version); the output token ids are identical across the servers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ctxkit.backends import SIMULATION_ENV, simulation_allowed
from ctxkit.collectors.latency import request_latency, stats
from ctxkit.completions import CompletionRequest
from ctxkit.experiments.common import check, make_backend, token_prompts
from ctxkit.models import ModelCard
from ctxkit.params import E0Params
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder


@dataclass
class ServerPass:
    name: str
    describe: dict[str, Any]
    records: list[RequestRecord]


def request_set(params: E0Params) -> list[CompletionRequest]:
    """Greedy and seeded-sampling requests over prompt_lens, each with its own prompt (fresh: no prefix hits)."""
    card = ModelCard.load(params.server.model)
    rng = np.random.default_rng(params.seed)
    bos = card.config.get("bos_token_id")
    lens = list(params.prompt_lens)
    greedy = token_prompts(rng, lens, card.vocab_size, bos)
    sampled = token_prompts(rng, lens, card.vocab_size, bos)
    out = []
    for i, prompt in enumerate(greedy):
        out.append(CompletionRequest(f"greedy-{i}-len{len(prompt)}", prompt, params.max_tokens, temperature=0.0))
    for i, prompt in enumerate(sampled):
        out.append(CompletionRequest(f"sampled-{i}-len{len(prompt)}", prompt, params.max_tokens,
                                     temperature=params.sampling_temperature, seed=params.seed + i))
    return out


def warmup_request(params: E0Params) -> CompletionRequest:
    """A prompt of its own (not in the measured set), so the first measured request pays no warm-up."""
    card = ModelCard.load(params.server.model)
    (prompt,) = token_prompts(np.random.default_rng(params.seed + 10_000), [min(params.prompt_lens)],
                              card.vocab_size, card.config.get("bos_token_id"))
    return CompletionRequest("warmup-0", prompt, params.max_tokens, warmup=True)


def serve_and_measure(params: E0Params, run: RunFolder, name: str, log=print) -> ServerPass:
    """Start a fresh server, warm it up, send the set one request at a time, stop it. Records go to requests.jsonl."""
    backend = make_backend(params, name, run)
    records: list[RequestRecord] = []
    log(f"[{name}] starting {backend.__class__.__name__} ({params.server.model}) ...")
    with backend, JsonlWriter(run.path / "requests.jsonl") as out:
        log(f"[{name}] up at {backend.base_url} (version {backend.version().get('version')})")
        requests = [warmup_request(params)] + request_set(params)
        for k, req in enumerate(requests, 1):
            rec = backend.generate(req.prompt, req.max_tokens, temperature=req.temperature, seed=req.seed,
                                   request_id=req.request_id, timeout_s=params.request_timeout_s)
            rec.warmup, rec.route = req.warmup, name
            rec.tags = {"server": name, "mode": "warmup" if req.warmup else req.request_id.split("-")[0]}
            out.write(rec)
            records.append(rec)
            lat = request_latency(rec)
            log(f"[{name}] {k}/{len(requests)} {req.request_id}: {rec.status}, {rec.n_out} tokens"
                + (f", TTFT {lat.ttft_ms:.1f} ms" if lat.ttft_ms is not None else "")
                + (f", error {rec.error}" if rec.error else ""))
        describe = backend.describe()
    return ServerPass(name, describe, records)


def latency_table(passes: list[ServerPass]) -> pd.DataFrame:
    rows = []
    for p in passes:
        for rec in p.records:
            if rec.warmup:
                continue
            lat = request_latency(rec)
            rows.append({"server": p.name, "request_id": rec.request_id, "mode": rec.tags.get("mode"),
                         "prompt_tokens": rec.prompt_tokens, "output_tokens": rec.n_out, "status": rec.status,
                         "ttft_ms": lat.ttft_ms, "tpot_ms": lat.tpot_ms, "e2e_ms": lat.e2e_ms})
    return pd.DataFrame(rows)


def summarize(params: E0Params, run: RunFolder, passes: list[ServerPass]) -> dict[str, Any]:
    measured = [r for p in passes for r in p.records if not r.warmup]
    failed = [r for r in measured if not r.ok]
    modes = {p.describe.get("mode") for p in passes}
    versions = [str(p.describe.get("version", {}).get("version", "")) for p in passes]
    real = all(p.describe.get("mode") == "real" and v and not v.startswith("simulated") for p, v in
               zip(passes, versions))
    checks = {
        "success": check(not failed and bool(measured),
                         f"{len(measured) - len(failed)}/{len(measured)} requests completed"
                         + (f"; first failure: {failed[0].request_id}: {failed[0].error}" if failed else "")),
        "strict_backend": check(modes == {"real"} or simulation_allowed(),
                                "real backend only" if modes == {"real"} else
                                f"simulated backend used with {SIMULATION_ENV}=1"),
        "all_backends_real_vllm": check(real, f"/version of each server: {versions}"),
    }
    if len(passes) > 1:
        by_id = [{r.request_id: r.output_token_ids for r in p.records if not r.warmup} for p in passes]
        diffs = [rid for rid in by_id[0] if any(b.get(rid) != by_id[0][rid] for b in by_id[1:])]
        empty = [rid for rid, ids in by_id[0].items() if not ids]
        checks["reproducible"] = check(
            not diffs and not empty,
            f"output token ids identical across {len(passes)} fresh servers for all {len(by_id[0])} requests"
            if not diffs and not empty else
            f"differ for {diffs[:5]}" + (f"; no output ids for {empty[:5]}" if empty else ""))
    lats = [request_latency(r) for r in measured if r.ok]
    summary = {
        "experiment": "e0_smoke",
        "run_id": run.run_id,
        "checks": checks,
        "profiling": {
            "latency": {
                "ttft_ms": stats(l.ttft_ms for l in lats),
                "tpot_ms": stats(l.tpot_ms for l in lats),
                "e2e_ms": stats(l.e2e_ms for l in lats),
            },
        },
        "servers": [p.describe for p in passes],
        "payload": {
            "requests": [{"request_id": r.request_id, "prompt_tokens": r.prompt_tokens, "max_tokens": r.max_tokens,
                          "mode": r.tags.get("mode"), "server": r.tags.get("server")} for r in measured],
            "results": [{"request_id": r.request_id, "server": r.tags.get("server"), "status": r.status,
                         "output_token_ids": r.output_token_ids, "output_text": r.output_text,
                         "n_out": r.n_out} for r in measured],
        },
    }
    run.write_json("summary.json", summary)
    return summary


def checks_frame(summary: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"check": k, "passed": v["passed"], "reason": v["reason"]}
                         for k, v in summary["checks"].items()])
