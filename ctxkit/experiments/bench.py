"""Benchmark one workload on one arrival process against one backend: `ctxkit bench`, and what notebooks call.

Steps: build the workload (token-exact prompts) and check it against the server's context length before the
first request; start or attach the backend; scrape /metrics before and after the measured window; send the
requests on their arrival process with a progress line; write requests.jsonl (as results arrive), summary.json
(ctxkit's names, vLLM's names under `vllm`, server-side deltas under `profiling.server`) and a per-request CSV.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from ctxkit.backends import ServingBackend
from ctxkit.backends.base import http_get
from ctxkit.collectors.latency import SLO, request_latency, summarize
from ctxkit.collectors.server_metrics import ServerMetricsCollector
from ctxkit.load.arrivals import Arrivals, run_load
from ctxkit.load.workloads import LengthDist, WorkItem, WorkloadError, from_sharegpt, from_trace, synthetic
from ctxkit.models import ModelCard
from ctxkit.params import BenchParams, LoadParams, SLOParams, WorkloadParams
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder

Log = Callable[[str], None]


def _dist(kind: str, mean: int, std: float, ratio: float, cap: int) -> LengthDist:
    if kind == "uniform":
        return LengthDist("uniform", mean, low=max(1, int(mean * (1 - ratio))), high=min(cap, int(mean * (1 + ratio))))
    return LengthDist(kind, mean, std, low=1, high=cap)


def build_workload(w: WorkloadParams, card: ModelCard, max_model_len: int, seed: int,
                   count: Optional[int] = None, id_prefix: str = "req") -> list[WorkItem]:
    """The requests of a workload; every one fits max_model_len (drawn lengths are capped, files are checked)."""
    n = count if count is not None else w.num_prompts
    if w.dataset == "random":
        in_cap = max(1, max_model_len - w.prefix_len - w.output_len)
        items = synthetic(n, _dist(w.input_dist, w.input_len, w.input_std, w.range_ratio, in_cap),
                          _dist(w.output_dist, w.output_len, w.output_std, w.range_ratio, max_model_len),
                          vocab_size=card.vocab_size, seed=seed, prefix_len=w.prefix_len,
                          num_prefixes=w.num_prefixes, id_prefix=id_prefix)
    elif w.dataset == "trace":
        items = from_trace(Path(w.dataset_path or ""), vocab_size=card.vocab_size, seed=seed, limit=n)
    else:
        items = from_sharegpt(Path(w.dataset_path or ""), card.path / "tokenizer.json", vocab_size=card.vocab_size,
                              num=n, seed=seed, max_input=max_model_len - w.output_len,
                              fixed_output=w.output_len if w.output_dist == "fixed" else None)
    too_long = [it for it in items if len(it.prompt) + it.max_tokens > max_model_len]
    if too_long:
        it = too_long[0]
        raise WorkloadError(f"{len(too_long)} request(s) exceed max_model_len {max_model_len}: e.g. {it.request_id} "
                            f"has {len(it.prompt)} prompt + {it.max_tokens} output tokens")
    return items


def arrivals_of(load: LoadParams, seed: int) -> Arrivals:
    rate = math.inf if load.request_rate is None else load.request_rate
    return Arrivals(load.arrival, rate, load.burstiness, load.concurrency, seed).check()


def slo_of(slo: SLOParams) -> Optional[SLO]:
    if slo.ttft_ms is None and slo.tpot_ms is None and slo.e2e_ms is None:
        return None
    return SLO(slo.ttft_ms, slo.tpot_ms, slo.e2e_ms)


def served_max_model_len(backend: ServingBackend) -> Optional[int]:
    """vLLM lists max_model_len in /v1/models."""
    try:
        status, body = http_get(f"{backend.base_url}/v1/models")
        for m in json.loads(body).get("data", []) if status == 200 else []:
            if m.get("id") == backend.model and m.get("max_model_len"):
                return int(m["max_model_len"])
    except (OSError, ValueError, AttributeError):
        pass
    return None


class Progress:
    """One status line, rewritten in a terminal, printed every 10% in a notebook or log."""

    def __init__(self, total: int, label: str, stream=None) -> None:
        # In a notebook, stdout (in order with the notebook's own prints); on a terminal, stderr (stdout is
        # kept for the run folder's path).
        stream = stream or (sys.stdout if "ipykernel" in sys.modules else sys.stderr)
        self.total, self.label, self.stream = total, label, stream
        self.t0 = time.monotonic()
        self.failed = 0
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.next_mark = 0.1
        self.last_print = self.t0

    def __call__(self, rec: RequestRecord, done: int, total: int) -> None:
        if rec.warmup:
            return
        self.failed += 0 if rec.ok else 1
        frac = done / max(1, total)
        line = (f"[{self.label}] {done}/{total} requests ({frac:.0%}), {self.failed} failed, "
                f"{time.monotonic() - self.t0:.1f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self.stream.flush()
        elif frac >= self.next_mark or done >= total or time.monotonic() - self.last_print >= 5.0:
            print(line, file=self.stream, flush=True)
            self.last_print = time.monotonic()
            while self.next_mark <= frac:
                self.next_mark += 0.1


def measure(backend: ServingBackend, items: list[WorkItem], load: LoadParams, *, seed: int, timeout_s: float,
            slo: Optional[SLO], out: Optional[JsonlWriter] = None, warmup: Optional[list[WorkItem]] = None,
            metrics_interval_s: Optional[float] = None, label: str = "bench",
            tags: Optional[dict[str, Any]] = None) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Send the items on the load's arrival process against a started backend.
    Returns the records and the summary (profiling.latency fields plus profiling.server deltas)."""
    arrivals = arrivals_of(load, seed)
    progress = Progress(len(items), label)

    def on_record(rec: RequestRecord, done: int, total: int) -> None:
        rec.route = rec.route or backend.name
        rec.tags.update(tags or {})
        if out is not None:
            out.write(rec)
        progress(rec, done, total)

    common = dict(max_concurrency=load.max_concurrency, timeout_s=timeout_s, on_record=on_record)
    # Warmup first, outside the measured window, so neither client nor server-side numbers include it.
    records = run_load(backend.base_url, backend.model, [], arrivals, warmup=warmup, **common) if warmup else []
    collector = ServerMetricsCollector(backend.name, backend.metrics, metrics_interval_s).start()
    records += run_load(backend.base_url, backend.model, items, arrivals, duration_s=load.duration_s, **common)
    server = collector.stop()
    check_alive(backend)
    latency = summarize(records, slo)
    return records, {"latency": latency, "server": {backend.name: server}, "timeline": collector.timeline}


def check_alive(backend: ServingBackend) -> None:
    """A managed server (or pool) that died during the window ends the experiment here, quoting its log: the
    records of the window are already in requests.jsonl, and the caller's context manager stops what is left."""
    alive = getattr(backend, "alive", None)
    if callable(alive) and not alive():
        from ctxkit.backends.base import ServerDied
        raise ServerDied(f"{backend.name} died during the measured window: {getattr(backend, 'death_note', lambda: '')()}")


def requests_frame(records: list[RequestRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        lat = request_latency(r)
        rows.append({"request_id": r.request_id, "warmup": r.warmup, "status": r.status,
                     "prompt_tokens": r.prompt_tokens, "output_tokens": r.n_out, "ttft_ms": lat.ttft_ms,
                     "ttft_sched_ms": lat.ttft_sched_ms, "tpot_ms": lat.tpot_ms, "e2e_ms": lat.e2e_ms,
                     "client_lag_ms": lat.client_lag_ms, "error": r.error, **r.tags})
    return pd.DataFrame(rows)


def prepare(params: BenchParams) -> tuple[list[WorkItem], list[WorkItem]]:
    """The measured requests and the warmup requests (other prompts), built and checked before anything starts."""
    card = ModelCard.load(params.server.model)
    arrivals_of(params.load, params.seed)
    items = build_workload(params.workload, card, params.server.max_model_len, params.seed)
    warm_w = params.workload if params.workload.dataset == "random" else WorkloadParams(
        input_len=min(256, params.server.max_model_len // 2), output_len=params.workload.output_len)
    warm = build_workload(warm_w, card, params.server.max_model_len, params.seed + 7919,
                          count=params.load.warmup_requests, id_prefix="warmup") if params.load.warmup_requests else []
    return items, warm


def run(params: BenchParams, run: RunFolder, backend: ServingBackend, log: Log = print,
        prepared: Optional[tuple[list[WorkItem], list[WorkItem]]] = None) -> dict[str, Any]:
    """The whole benchmark into `run`; the backend is started here (or attached) and stopped after."""
    items, warm = prepared or prepare(params)
    log(f"[bench] {len(items)} requests ({params.workload.dataset}), arrival {params.load.arrival}"
        f" rate {params.load.request_rate or 'inf'}; {len(warm)} warmup")
    with backend:
        max_len = served_max_model_len(backend)
        if max_len is not None:
            longest = max(len(it.prompt) + it.max_tokens for it in items)
            if longest > max_len:
                raise WorkloadError(f"the server's max_model_len is {max_len}, the workload needs {longest}")
        log(f"[bench] backend {backend.name} at {backend.base_url} ({backend.mode}, model {backend.model})")
        with JsonlWriter(run.path / "requests.jsonl") as out:
            records, profiling = measure(backend, items, params.load, seed=params.seed,
                                         timeout_s=params.request_timeout_s, slo=slo_of(params.slo), out=out,
                                         warmup=warm, metrics_interval_s=params.metrics_interval_s)
        describe = backend.describe()
    requests_frame(records).to_csv(run.artifacts / "bench_requests.csv", index=False)
    if profiling["timeline"]:
        pd.DataFrame(profiling["timeline"]).to_csv(run.artifacts / "bench_server_timeline.csv", index=False)
    latency = profiling["latency"]
    summary = {
        "experiment": "bench",
        "run_id": run.run_id,
        "backend": describe,
        "checks": {"success": {"passed": latency["failed"] == 0,
                               "reason": f"{latency['completed']}/{latency['requests']} completed"
                                         + (f"; errors {latency['errors_by_status']}" if latency["failed"] else "")}},
        "profiling": {"latency": latency, "server": profiling["server"]},
        "vllm": latency["vllm"],   # `vllm bench serve`'s result keys, at the top as there
    }
    run.write_json("summary.json", summary)
    return summary


