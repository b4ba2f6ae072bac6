"""E5 long context. Part `cost` is ctxkit.experiments.e5_cost. Part `capacity`: how many requests of context length L the server's KV cache holds at once,
measured, against three predictions.

Predictions, per L (each request holds L prompt tokens plus `output_len` generated ones):
- analytical: the KV cache's bytes (its blocks x block size x the card's KV bytes per token) over one request's
  bytes ((L + output_len) x the card's KV bytes per token), block rounding ignored. With the cache's size given in
  blocks (as vLLM reports it) this is its tokens over the request's tokens: the card's bytes cancel, and only a
  cache given in bytes would test them;
- vLLM's startup log: "Maximum concurrency for M tokens per request: X" scaled to L + output_len tokens;
- vLLM's cache_config_info: its blocks less one (vLLM's block pool keeps block 0 aside as its null block,
  vllm/v1/core/block_pool.py) divided by the whole blocks one request needs.
Measured: for each level of concurrency c (factors x the cache-config prediction), c x requests_per_slot requests in
a closed loop of c, the server's own gauges scraped every metrics_interval_s: the peak of running requests (what
the cache held at once), the peak waiting, the peak KV usage and the preemptions. The capacity is the highest peak
of running requests; past it, requests wait or are preempted. A level held back by the server's max_num_seqs
rather than its cache shows the same plateau with KV usage well below 1: the levels table's peak KV usage tells
which (on GPUs, pick context lengths long enough that the cache, not max_num_seqs, is the limit).

Hold levels (`capacity_hold`, for GPUs): a closed loop holds c requests at once only while a request lives longer
than the server takes to admit the next ones. On an H200 at 16,320 tokens it did not: prefills of 0.5 s each against
64 output tokens of 20 ms, so levels of 54 and 68 ran at most 33 at once with the cache 59% full and no preemption.
A hold level sends its c requests at once, each asking for output_len tokens (make that long: the requests must
outlast the admission of all c), and cancels them once the server has admitted what it will: every request has its
first token (the gauges then get a few scrapes to see them all running), or none has come for the longer of
hold_settle_s and three times the longest wait between first tokens so far. vLLM admits on a prompt's blocks, so a
hold level can run up to (L + output_len) / L times the analytical prediction before decodes would preempt.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ctxkit import plots
from ctxkit.backends.base import ServingBackend
from ctxkit.collectors.gpu import GPUSampler
from ctxkit.collectors.server_metrics import cache_config, parse
from ctxkit.experiments import e5_chunked, e5_cost, e5_prefix, e5_trace
from ctxkit.experiments.common import check, make_backend, server_peaks
from ctxkit.load.arrivals import StopFn
from ctxkit.load.engine import measure
from ctxkit.load.search import settle
from ctxkit.load.workloads import LengthDist, synthetic
from ctxkit.models import ModelCard
from ctxkit.params import E5Params, LoadParams
from ctxkit.records import CANCELLED, OK, JsonlWriter, RequestRecord, failures, read_records
from ctxkit.runs.folder import RunFolder
from ctxkit.schedulers.placement import server_gpu_roles

LOG_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
LOG_SIZE = re.compile(r"KV cache size: ([\d,]+) tokens")


def cache_view(backend: ServingBackend, log_path: Optional[Path]) -> dict[str, Any]:
    """What the server says about its KV cache: cache_config_info's blocks and block size, and its startup log's
    cache size and maximum concurrency."""
    view: dict[str, Any] = {"num_blocks": None, "block_size": None, "log_tokens": None, "log_concurrency": None}
    for fetch in backend.metric_sources().values():
        if info := cache_config(parse(fetch())):
            blocks = next((info[k] for k in ("num_gpu_blocks_override", "num_gpu_blocks")
                           if str(info.get(k, "None")).isdigit()), None)
            size = info.get("block_size")
            view.update(num_blocks=int(blocks) if blocks else None,
                        block_size=int(size) if str(size).isdigit() else None, cache_config=info)
    text = log_path.read_text(errors="replace") if log_path and log_path.is_file() else ""
    if (m := LOG_SIZE.search(text)):
        view["log_tokens"] = int(m.group(1).replace(",", ""))
    if (m := LOG_CONCURRENCY.search(text)):
        view["log_concurrency"] = {"tokens": int(m.group(1).replace(",", "")), "requests": float(m.group(2))}
    return view


def predictions(view: dict[str, Any], card: ModelCard, dtype: str, tokens: int) -> dict[str, Optional[float]]:
    """Requests of `tokens` tokens each that the cache holds, three ways (see the module's docstring)."""
    blocks, size = view["num_blocks"], view["block_size"]
    per_token = card.kv_bytes_per_token(dtype)
    conc = view.get("log_concurrency")
    return {"kv_cache_bytes": blocks * size * per_token, "kv_bytes_per_token": per_token,
            "analytical": blocks * size * per_token / (tokens * per_token),
            "vllm_log": conc["requests"] * conc["tokens"] / tokens if conc else None,
            # less the null block; a request stores the KV of all its tokens but the last one generated
            "cache_config": float((blocks - 1) // math.ceil((tokens - 1) / size))}


def levels(params: E5Params, predicted: float) -> list[int]:
    return sorted({max(1, round(f * predicted)) for f in params.concurrency_factors})


def measure_level(params: E5Params, backend: ServingBackend, card: ModelCard, length: int, c: int, k: int,
                  out: JsonlWriter, timeline: list[dict[str, Any]], log=print) -> dict[str, Any]:
    """c x requests_per_slot fresh prompts of `length` tokens in a closed loop of c (a hold level: c of them at
    once, see the module's docstring); the server's peaks. Its scrapes are added to `timeline`."""
    n = c if params.capacity_hold else c * params.requests_per_slot
    items = synthetic(n, LengthDist("fixed", length), LengthDist("fixed", params.output_len),
                      vocab_size=card.vocab_size, seed=params.seed * 1000 + k, id_prefix=f"L{length}c{c}")
    span = f"L={length} c={c}"
    label, tags = f"e5 {span}", {"context_len": length, "concurrency": c, "part": "capacity", "span": span}
    if params.capacity_hold:
        records, prof = hold_level(params, backend, items, c, out, label, tags, params.seed + k)
    else:
        records, prof = measure(backend, items, LoadParams(arrival="concurrency", concurrency=c, warmup_requests=0),
                                seed=params.seed + k, timeout_s=params.request_timeout_s, slo=None, out=out,
                                metrics_interval_s=params.metrics_interval_s, label=label, tags=tags)
    lat = prof["latency"]                         # the window's client-side numbers, as every experiment has them
    cancelled = sum(1 for r in records if r.status == CANCELLED)     # a hold level's, by design
    failed = sum(1 for r in records if r.status not in (OK, CANCELLED))
    row = {"context_len": length, "concurrency": c, "requests": len(records), "failed": failed, "cancelled": cancelled,
           "errors": failures(records, expected=(CANCELLED,)),
           **server_peaks(prof),
           "p50_ttft_ms": lat["ttft_ms"]["p50"], "p50_tpot_ms": lat["tpot_ms"]["p50"]}
    row["held"] = bool(row["peak_running"] is not None and row["peak_running"] >= c and not row["preemptions"])
    log(f"[e5] L={length} c={c}: peak running {row['peak_running']}, waiting {row['peak_waiting']}, "
        f"preemptions {row['preemptions']:g}, KV usage {row['peak_kv_usage']}")
    timeline += [{"span": span, **r} for r in prof["timeline"]]
    return row


def hold_rule(c: int, settle_s: float, dwell_s: float) -> StopFn:
    """When a hold level has seen what the cache admits (see the module's docstring)."""
    def stop(done: list[RequestRecord], live: list[RequestRecord], now_ns: int) -> Optional[str]:
        recs = done + live
        if len(recs) < c:
            return None                               # still sending
        marks = [min(r.t_send_ns for r in recs)] + sorted(r.t_first_ns for r in recs if r.t_first_ns)
        if len(marks) == 1:      # nothing prefilled yet: one long prompt's prefill can outlast settle_s
            return None
        if len(marks) == c + 1:                       # every request admitted and prefilled
            return "cancel" if now_ns - marks[-1] >= dwell_s * 1e9 else None
        longest = max((b - a for a, b in zip(marks, marks[1:])), default=0)
        return "cancel" if now_ns - marks[-1] >= max(settle_s * 1e9, 3 * longest) else None
    return stop


def hold_level(params: E5Params, backend: ServingBackend, items: list, c: int, out: JsonlWriter,
               label: str, tags: dict[str, Any], seed: int) -> tuple[list[RequestRecord], dict[str, Any]]:
    """c requests at once, cancelled by hold_rule; the server is left idle for the next level."""
    records, prof = measure(backend, items, LoadParams(arrival="poisson", request_rate=None, warmup_requests=0),
                            seed=seed, timeout_s=params.request_timeout_s, slo=None, out=out,
                            metrics_interval_s=params.metrics_interval_s, label=label, tags=tags,
                            stop=hold_rule(c, params.hold_settle_s, 3 * params.metrics_interval_s),
                            drain_s=params.request_timeout_s)
    settle(backend, 60.0)          # cancelled requests are aborted by the server as their connections close
    return records, prof


def past_capacity(top: dict[str, Any]) -> bool:
    """The highest level went past what the cache holds: fewer requests ran at once than the client had in flight,
    and the rest waited or were preempted. (Waiting alone is no sign: a burst of long prompts waits for the step's
    token budget even when the cache has room.)"""
    return bool((top["peak_running"] or 0) < top["concurrency"] and (top["peak_waiting"] or top["preemptions"]))


def sweep(params: E5Params, run: RunFolder, log=print) -> dict[str, Any]:
    """The parts switched on: `capacity`, `cost` (ctxkit.experiments.e5_cost), `prefix` (e5_prefix) and `trace`
    (e5_trace) on one server, whose cache is read first, with NVML sampling its GPU and its gauges scraped through
    the capacity levels and the trace (e5_server_timeline.csv, e5_gpu_timeline.csv); then `chunked` (e5_chunked), a
    server per setting. Returns view, capacity, levels, cost, prefix, trace, chunked and gpu."""
    card = ModelCard.load(params.server.model)
    result: dict[str, Any] = {"view": {}, "capacity": [], "levels": [], "cost": None, "prefix": None, "chunked": None,
                              "trace": None, "gpu": {"available": False, "reason": "no part ran on the main server"}}
    with JsonlWriter(run.path / "requests.jsonl") as out:
        trace = e5_trace.trace_items(params, card) if "trace" in params.parts else []
        if {"capacity", "cost", "prefix", "trace"} & set(params.parts):
            sampler = GPUSampler(params.gpu_sample_interval_s, roles=server_gpu_roles(params.server.env, params.server.extra_args))
            if params.backend != "vllm":    # its GPUs need not be on this host: NVML here says nothing of them
                sampler.unavailable = f"backend {params.backend}: ctxkit samples only GPUs of servers it starts"
            with make_backend(params, "server", run) as backend, sampler:
                result.update(one_server_parts(params, backend, card, out, trace, log))
            result["gpu"] = sampler.stop()
            sampler.write_timeline(run.artifacts / "e5_gpu_timeline.csv")
            timeline = result.pop("timeline")
            if timeline:
                pd.DataFrame(timeline).to_csv(run.artifacts / "e5_server_timeline.csv", index=False)
        if "chunked" in params.parts:       # after the main server is gone: each setting starts one of its own
            result["chunked"] = e5_chunked.measure_chunked(params, run, card, out, log)
    return result


def one_server_parts(params: E5Params, backend: ServingBackend, card: ModelCard, out: JsonlWriter,
                     trace_items: list, log=print) -> dict[str, Any]:
    view = cache_view(backend, getattr(backend, "log_path", None))
    if "capacity" in params.parts and (view["num_blocks"] is None or view["block_size"] is None):
        raise RuntimeError("the server exposes no vllm:cache_config_info with its blocks and block size: "
                           "nothing to predict the capacity from (see its /metrics)")
    log(f"[e5] server up; KV cache: {view['num_blocks']} blocks of {view['block_size']} tokens; log: "
        f"{view['log_tokens']} tokens, {view['log_concurrency']}")
    rows, capacity, cost, prefix, trace = [], [], None, None, None
    timeline: list[dict[str, Any]] = []          # the server's gauges through capacity levels and the trace
    for length in (params.context_lens if "capacity" in params.parts else []):
        pred = predictions(view, card, params.server.dtype, length + params.output_len)
        for c in levels(params, pred["cache_config"]):
            rows.append(measure_level(params, backend, card, length, c, len(rows), out, timeline, log))
        mine = [r for r in rows if r["context_len"] == length]
        held = [r["concurrency"] for r in mine if r["held"]]
        # vLLM admits a request on its prompt's blocks and preempts when decodes outgrow the cache: a level
        # that preempted ran more at its peak than the cache holds to the end; count the others when any
        clean = [r for r in mine if not r["preemptions"]] or mine
        capacity.append({"context_len": length, "tokens_per_request": length + params.output_len, **pred,
                         "measured": max((r["peak_running"] or 0) for r in clean),
                         "held_at_once": max(held) if held else 0,
                         "past_capacity_held_back": past_capacity(mine[-1])})
    if "cost" in params.parts:
        cost_rows = e5_cost.measure_cost(params, backend, card, out, log)
        cost = {"rows": cost_rows, "fit": e5_cost.fit(cost_rows),
                "floors": e5_cost.floors(card) or {"available": False, "reason": "no GPU with known peaks"}}
    if "prefix" in params.parts:
        prefix = {"context_len": params.prefix_context_len, "block_size": view["block_size"],
                  "rows": e5_prefix.measure_prefix(params, backend, card, view["block_size"], out, log)}
    if "trace" in params.parts:
        trace, scraped = e5_trace.measure_trace(params, backend, trace_items, out, log)
        timeline += scraped
    return {"view": view, "capacity": capacity, "levels": rows, "cost": cost, "prefix": prefix, "trace": trace,
            "timeline": timeline}


def summarize(params: E5Params, run: RunFolder, result: dict[str, Any]) -> dict[str, Any]:
    view, capacity, rows, cost = result["view"], result["capacity"], result["levels"], result["cost"]
    prefix, chunked, trace = result["prefix"], result["chunked"], result.get("trace")
    for c in capacity:
        c["measured_over_analytical"] = c["measured"] / c["analytical"] if c["analytical"] else None
    within = [abs(c["measured_over_analytical"] - 1) <= params.tolerance for c in capacity
              if c["measured_over_analytical"] is not None]
    every = rows + (cost["rows"] if cost else []) + (prefix["rows"] if prefix else []) + (chunked or []) + \
        ([trace] if trace else [])
    errors = [e for r in every for e in r.get("errors") or []]
    checks = {"every_request_completed": check(all(r["failed"] == 0 for r in every),
                                               f"{sum(r['failed'] for r in every)} failed of "
                                               f"{sum(r['requests'] for r in every)}"
                                               + (f"; first: {'; '.join(errors[:3])}" if errors else ""))}
    if "capacity" in params.parts:
        checks["capacity_within_tolerance"] = check(len(within) == len(capacity) and all(within),
                                                    f"measured within {100 * params.tolerance:g}% of the analytical "
                                                    f"prediction at {sum(within)}/{len(capacity)} context lengths")
        checks["past_capacity_held_back"] = check(all(c["past_capacity_held_back"] for c in capacity),
                                                  "at every length the highest level ran fewer requests at once "
                                                  "than were in flight, the rest waiting or preempted")
    if cost:
        b1 = sorted((r for r in cost["rows"] if r["batch"] == 1), key=lambda r: r["context_len"])
        grew = bool(b1[0]["p50_ttft_ms"] and b1[-1]["p50_ttft_ms"] and b1[-1]["p50_ttft_ms"] > b1[0]["p50_ttft_ms"])
        checks["ttft_grows_with_context"] = check(grew, f"p50 TTFT at batch 1: {b1[0]['p50_ttft_ms']} ms at "
                                                        f"{b1[0]['context_len']} tokens, {b1[-1]['p50_ttft_ms']} ms "
                                                        f"at {b1[-1]['context_len']}")
    if prefix:
        checks["prefix_hits_follow_the_ratio"] = check(*e5_prefix.hits_follow(prefix["rows"]))
    if chunked:
        spiked = [r for r in chunked if r.get("spikes_ms") and all(x is not None for x in r["spikes_ms"])]
        checks["itl_around_every_arrival"] = check(len(spiked) == len(chunked),
                                                   f"{len(spiked)}/{len(chunked)} settings have decode gaps inside "
                                                   "every long prefill's window")
    if trace:
        checks["trace_lengths_exact"] = check(trace["fidelity"]["lengths_exact"],
                                              f"{trace['requests']} requests, every prompt as long as its row says"
                                              if trace["fidelity"]["lengths_exact"] else
                                              f"mismatches: {trace['fidelity']['length_mismatches']}")
    summary = {"experiment": "e5_context", "run_id": run.run_id, "parts": list(params.parts), "cache": view,
               "checks": checks, "capacity": capacity, "levels": rows, "cost": cost, "prefix": prefix,
               "chunked": [{k: v for k, v in r.items() if k != "gaps"} for r in chunked] if chunked else None,
               "trace": trace, "profiling": {"gpu": result.get("gpu")}}
    run.write_json("summary.json", summary)
    return summary


def write_artifacts(run: RunFolder, summary: dict[str, Any],
                    chunked_series: Optional[list[dict]] = None) -> dict[str, Any]:
    """CSVs and figures by part (capacity, levels, cost, chunked, prefix); `chunked_series` (the sweep's chunked
    rows, with their gaps) gives the ITL time-axis plot."""
    figs: dict[str, Any] = {}
    if summary["capacity"]:
        capacity, levels_ = pd.DataFrame(summary["capacity"]), pd.DataFrame(summary["levels"])
        capacity.to_csv(run.artifacts / "e5_capacity.csv", index=False)
        levels_.to_csv(run.artifacts / "e5_levels.csv", index=False)
        figs["capacity"] = plots.capacity_vs_context(capacity, run.artifacts / "e5_capacity.svg")
        figs["levels"] = plots.running_vs_concurrency(levels_, run.artifacts / "e5_levels.svg")
    if summary["cost"]:
        cost = pd.DataFrame(summary["cost"]["rows"])
        cost.to_csv(run.artifacts / "e5_cost.csv", index=False)
        figs["cost"] = plots.cost_of_context(cost, summary["cost"]["fit"], run.artifacts / "e5_cost.svg")
    if summary.get("chunked"):
        pd.DataFrame(summary["chunked"]).drop(columns=["windows_s", "spikes_ms", "prefill_ms"], errors="ignore") \
            .to_csv(run.artifacts / "e5_chunked.csv", index=False)
    if chunked_series:
        pd.DataFrame([{"setting": r["setting"], "t_from_start_s": t, "gap_ms": g} for r in chunked_series
                      for t, g in r.get("gaps", [])]).to_csv(run.artifacts / "e5_chunked_itl.csv", index=False)
        figs["chunked"] = plots.itl_around_prefills(chunked_series, run.artifacts / "e5_chunked.svg")
    if summary.get("prefix"):
        prefix = pd.DataFrame(summary["prefix"]["rows"])
        prefix.to_csv(run.artifacts / "e5_prefix.csv", index=False)
        figs["prefix"] = plots.prefix_reuse(prefix, run.artifacts / "e5_prefix.svg")
    if summary.get("trace"):
        pd.json_normalize(summary["trace"], sep="_").to_csv(run.artifacts / "e5_trace.csv", index=False)
    timeline = server_timeline_figure(run)
    if timeline is not None:
        figs["server_timeline"] = timeline
    return figs


def server_timeline_figure(run: RunFolder):
    """The main server's gauges through the capacity levels and the trace, beside the client's requests in flight
    and, on a GPU, NVML's memory and utilization; None when nothing was scraped."""
    path = run.artifacts / "e5_server_timeline.csv"
    if not path.is_file():
        return None
    timeline = pd.read_csv(path)
    requests = pd.DataFrame([{"span": r.tags["span"], "t_send_ns": r.t_send_ns, "t_end_ns": r.t_end_ns}
                             for r in read_records(run.path / "requests.jsonl")
                             if not r.warmup and r.t_send_ns and r.tags.get("span") in set(timeline["span"])])
    if requests.empty:
        return None
    gpu_path = run.artifacts / "e5_gpu_timeline.csv"
    gpu = pd.read_csv(gpu_path) if gpu_path.is_file() else None
    return plots.server_timeline(timeline, requests, run.artifacts / "e5_server_timeline.svg", gpu=gpu, span="span")


def capacity_view(summary: dict[str, Any]):
    cols = {"context_len": "context", "tokens_per_request": "tokens a request", "analytical": "analytical",
            "vllm_log": "vLLM log", "cache_config": "cache config", "measured": "measured (peak running)",
            "held_at_once": "all c ran at once up to", "measured_over_analytical": "measured / analytical"}
    frame = pd.DataFrame(summary["capacity"])[list(cols)].rename(columns=cols)
    return frame.style.hide(axis="index").format(precision=2, na_rep="-")


def cost_view(summary: dict[str, Any]):
    if not summary["cost"]:
        return "part `cost` is off"
    cols = {"context_len": "context", "batch": "batch", "p50_ttft_ms": "p50 TTFT ms", "p50_tpot_ms": "p50 TPOT ms",
            "p50_tpot_steady_ms": "steady TPOT ms", "steady_running": "decoding (steady)",
            "kv_bytes_per_step": "KV bytes a step reads", "ttft_over_floor": "TTFT / floor",
            "tpot_over_floor": "TPOT / floor"}
    frame = pd.DataFrame(summary["cost"]["rows"])
    frame = frame[[c for c in cols if c in frame]].rename(columns=cols)
    return frame.style.hide(axis="index").format(precision=2, na_rep="-", thousands=",")


def prefix_view(summary: dict[str, Any]):
    if not summary.get("prefix"):
        return "part `prefix` is off"
    cols = {"prefix_ratio": "shared ratio", "cache": "cache", "shared_tokens": "shared tokens",
            "p50_ttft_ms": "p50 TTFT ms", "hit_rate": "measured hit rate", "implied_hit_rate": "implied hit rate"}
    frame = pd.DataFrame(summary["prefix"]["rows"])[list(cols)].rename(columns=cols)
    return frame.style.hide(axis="index").format(precision=3, na_rep="-")


def trace_view(summary: dict[str, Any]):
    """The replay's fidelity and the server's view of it, one row of named quantities."""
    t = summary.get("trace")
    if not t:
        return "part `trace` is off"
    fid, lag = t["fidelity"], t["fidelity"].get("send_lag") or {}
    rows = {"requests (failed)": f"{t['requests']} ({t['failed']})", "speedup": f"{t['speedup']:g}x",
            "prompt tokens (longest)": f"{t['prompt_tokens']:,} ({t['longest_prompt']:,})",
            "lengths exact": fid["lengths_exact"],
            "reuse the trace implies": f"{fid['implied_reusable_tokens']:,} tokens ({fid['implied_reuse'] or 0:.2f})",
            "server's prefix hits": f"{fid['measured_prefix_hits'] or 0:,.0f} tokens",
            "p50 / p99 TTFT ms": f"{t['p50_ttft_ms'] or 0:,.0f} / {t['p99_ttft_ms'] or 0:,.0f}",
            "p50 / p99 TPOT ms": f"{t['p50_tpot_ms'] or 0:,.1f} / {t['p99_tpot_ms'] or 0:,.1f}",
            "peak running / waiting": f"{t['peak_running']} / {t['peak_waiting']}",
            "peak KV usage": f"{100 * (t['peak_kv_usage'] or 0):.0f}%", "preemptions": f"{t['preemptions']:g}",
            "send lag p50 / p99 / max ms": " / ".join(f"{lag.get(k, 0):.1f}" for k in ("p50_ms", "p99_ms", "max_ms"))}
    return pd.DataFrame({"quantity": list(rows), "value": [str(v) for v in rows.values()]}).style.hide(axis="index")


def chunked_view(summary: dict[str, Any]):
    if not summary.get("chunked"):
        return "part `chunked` is off"
    cols = {"setting": "setting", "flags": "vLLM flags", "baseline_itl_ms": "median decode gap ms",
            "mean_spike_ms": "mean spike ms", "spike_over_baseline": "spike / median",
            "arrival_lag_max_ms": "latest prefill send, ms behind schedule",
            "burst_share": "gaps under 0.1 ms (client behind)"}
    frame = pd.DataFrame(summary["chunked"])
    frame = frame[[c for c in cols if c in frame]].rename(columns=cols)
    return frame.style.hide(axis="index").format(precision=2, na_rep="-")


def conclusions(summary: dict[str, Any]) -> str:
    parts = []
    for c in summary["capacity"]:
        parts.append(f"At {c['context_len']:,} prompt tokens ({c['tokens_per_request']:,} a request) the cache held "
                     f"{c['measured']:g} requests at once against {c['analytical']:.1f} predicted from its bytes "
                     f"({c['measured_over_analytical']:.2f}x), {c['cache_config']:g} from whole blocks and "
                     + (f"{c['vllm_log']:.1f} from vLLM's log" if c["vllm_log"] is not None else "none from the log")
                     + ("; past it, the rest waited or were preempted." if c["past_capacity_held_back"]
                        else "; the highest level did not go past it."))
    if summary["cost"]:
        parts.append(e5_cost.conclusion(summary["cost"]))
    if summary.get("prefix"):
        parts.append(e5_prefix.conclusion(summary["prefix"]["rows"]))
    if summary.get("chunked"):
        parts.append(e5_chunked.conclusion(summary["chunked"]))
    if summary.get("trace"):
        parts.append(e5_trace.conclusion(summary["trace"]))
    failed = [k for k, v in summary["checks"].items() if not v["passed"]]
    parts.append("All checks passed." if not failed else f"Checks FAILED: {', '.join(failed)}.")
    return " ".join(parts)
