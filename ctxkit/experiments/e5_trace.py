"""E5 long context, part `trace`: a production-shaped workload on the same server, replayed on its own timestamps.

A Mooncake-format trace (`trace.dataset_path`: JSONL rows of timestamp ms, input_length, output_length and hash_ids
of 512-token blocks; a hash id always stands for the same 512 token ids, so shared ids are shared prefixes) within
its window (`trace.trace_start_ms`, `trace.trace_duration_ms`), its timestamps divided by `trace.trace_speedup`,
at most `trace.num_prompts` rows. The server's gauges are scraped every `metrics_interval_s` through it, so that the
run's timeline shows where its queue grew, its KV cache filled and it preempted, beside the client's requests; the
replay's fidelity (lengths exact, the prefix reuse the trace implies against the server's prefix-cache hits, send
lag against the timestamps) as E2 reports it for a trace point.
"""
from __future__ import annotations

from typing import Any

from ctxkit.backends.base import ServingBackend
from ctxkit.collectors import replay
from ctxkit.experiments.common import ms_text, server_peaks
from ctxkit.load.engine import measure
from ctxkit.load.workloads import build_workload
from ctxkit.models import ModelCard
from ctxkit.params import E5Params, LoadParams
from ctxkit.records import OK, JsonlWriter, RequestRecord, failures

SPAN = "trace"


def trace_items(params: E5Params, card: ModelCard) -> list:
    """The window's requests, built before any server starts: a window with no rows, or rows longer than
    max_model_len, is refused then (WorkloadError), not after the other parts have run."""
    assert params.trace is not None                     # E5Params refuses part trace without one
    return build_workload(params.trace, card, params.server.max_model_len, params.seed + 4_242, id_prefix="trace")


def measure_trace(params: E5Params, backend: ServingBackend, items: list, out: JsonlWriter,
                  log=print) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The replay's row (fidelity, latency, the server's peaks) and its timeline rows."""
    assert params.trace is not None
    log(f"[e5] trace: {len(items)} requests over {items[-1].arrival_ms / 1000:.1f} s (speedup "
        f"{params.trace.trace_speedup:g}), {sum(len(it.prompt) for it in items):,} prompt tokens")
    records, prof = measure(backend, items, LoadParams(arrival="trace", warmup_requests=0), seed=params.seed,
                            timeout_s=params.request_timeout_s, slo=None, out=out,
                            metrics_interval_s=params.metrics_interval_s, label="e5 trace",
                            tags={"part": "trace", "span": SPAN})
    row = trace_row(params, items, records, prof)
    log(f"[e5] trace: p50 TTFT {ms_text(row['p50_ttft_ms'])}, p99 {ms_text(row['p99_ttft_ms'])}; peak waiting "
        f"{row['peak_waiting']}, preemptions {row['preemptions']:g}; prefix hits / implied "
        f"{row['fidelity']['measured_over_implied']}")
    return row, [{"span": SPAN, **r} for r in prof["timeline"]]


def trace_row(params: E5Params, items: list, records: list[RequestRecord], prof: dict[str, Any]) -> dict[str, Any]:
    assert params.trace is not None
    lat = prof["latency"]
    return {"requests": len(records), "failed": sum(r.status != OK for r in records), "errors": failures(records),
            "file": params.trace.dataset_path, "start_ms": params.trace.trace_start_ms,
            "duration_ms": params.trace.trace_duration_ms, "speedup": params.trace.trace_speedup,
            "prompt_tokens": sum(len(it.prompt) for it in items),
            "longest_prompt": max(len(it.prompt) for it in items),
            "p50_ttft_ms": lat["ttft_ms"]["p50"], "p99_ttft_ms": lat["ttft_ms"]["p99"],
            "p50_tpot_ms": lat["tpot_ms"]["p50"], "p99_tpot_ms": lat["tpot_ms"]["p99"],
            **server_peaks(prof),
            "fidelity": replay.fidelity(items, records, prof["server"], "trace")}


def conclusion(row: dict[str, Any]) -> str:
    fid = row["fidelity"]
    ratio = fid.get("measured_over_implied")
    lag = fid.get("send_lag") or {}
    return (f"Trace replay: {row['requests']} requests ({row['prompt_tokens']:,} prompt tokens, the longest "
            f"{row['longest_prompt']:,}) at {row['speedup']:g}x the trace's timestamps, {row['failed']} failed; p50/p99 "
            f"TTFT {ms_text(row['p50_ttft_ms'], 0)} / {ms_text(row['p99_ttft_ms'], 0)}; the server peaked at "
            f"{row['peak_running']} running and {row['peak_waiting']} waiting with its KV cache "
            f"{100 * (row['peak_kv_usage'] or 0):.0f}% full and {row['preemptions']:g} preemptions; lengths "
            f"{'exact' if fid['lengths_exact'] else 'NOT exact'}, prefix hits "
            f"{'-' if ratio is None else f'{ratio:.2f}'} of the reuse the trace implies, send lag p99 "
            f"{ms_text(lag.get('p99_ms'))}.")
