"""`ctxkit bench`: one workload on one arrival process against one backend, into a run folder.

Steps: build the workload (token-exact prompts) and check it against the server's context length before the
first request; start or attach the backend; measure the window with the engine (ctxkit.load.engine); write
requests.jsonl (as results arrive), summary.json (ctxkit's names, vLLM's under `vllm`, the servers' deltas under
`profiling.server`, client-minus-server means under `profiling.client_vs_server`) and a per-request CSV.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import pandas as pd

from ctxkit import plots
from ctxkit.backends import ServingBackend
from ctxkit.collectors import replay
from ctxkit.collectors.latency import requests_frame, slo_of
from ctxkit.experiments import calibrate
from ctxkit.load.arrivals import arrivals_of
from ctxkit.load.engine import measure
from ctxkit.load.search import SearchPolicy, search, trace_window_fits
from ctxkit.load.workloads import WorkItem, WorkloadError, build_workload
from ctxkit.models import ModelCard
from ctxkit.params import BenchParams, WorkloadParams
from ctxkit.records import JsonlWriter
from ctxkit.runs.folder import RunFolder

Log = Callable[[str], None]


def prepare(params: BenchParams) -> tuple[list[WorkItem], list[WorkItem]]:
    """The measured requests and the warmup requests (other prompts), built and checked before anything starts."""
    card = ModelCard.load(params.server.model)
    arrivals_of(params.load, params.seed)
    if params.search is not None and params.search.arrival == "trace":
        trace_window_fits(params.workload, params.search, card, params.server.max_model_len, params.seed)
    items = build_workload(params.workload, card, params.server.max_model_len, params.seed)
    warm_w = params.workload if params.workload.dataset == "random" else WorkloadParams(
        input_len=min(256, params.server.max_model_len // 2), output_len=params.workload.output_len)
    warm = build_workload(warm_w, card, params.server.max_model_len, params.seed + 7919,
                          count=params.load.warmup_requests, id_prefix="warmup") if params.load.warmup_requests else []
    return items, warm


def run_search(params: BenchParams, run: RunFolder, backend: ServingBackend, log: Log = print) -> dict[str, Any]:
    """`--search rate`: the goodput search (ctxkit.load.search) against the backend; every probe printed."""
    assert params.search is not None
    card = ModelCard.load(params.server.model)
    s = params.search
    policy = SearchPolicy.of(s, params.seed)
    if params.load.workers > s.workers:          # --num-workers: the probes start from that many client processes
        policy = dataclasses.replace(policy, workers=params.load.workers)

    def items(probe: int, batch: int, n: int) -> list[WorkItem]:
        return build_workload(params.workload, card, params.server.max_model_len,
                              params.seed * 1_000_003 + probe * 31 + batch, count=n, id_prefix=f"p{probe}b{batch}")

    log(f"[bench] goodput search: SLO {slo_of(params.slo).as_dict()}, target {s.target:g}, from {s.start_rate:g} "
        f"req/s, tolerance {100 * s.tolerance:g}%")
    log(f"{'probe':>5} {'rate':>9} {'sent':>5} {'met':>5} {'attained':>9} {'95% bounds*':>15} {'n_eff':>6}  verdict")
    with backend, JsonlWriter(run.path / "requests.jsonl") as out:
        result = search(backend, items, slo_of(params.slo), policy, timeout_s=params.request_timeout_s,
                        on_records=lambda recs: [out.write(r) for r in recs],
                        on_probe=lambda p: log(f"{p.index:>5} {p.rate:>9.3f} {p.sent:>5} {p.met:>5} "
                                               f"{(p.attainment or 0):>9.3f} [{p.attainment_low:.3f}, "
                                               f"{p.attainment_high:.3f}] {p.n_eff:>6.0f}  {p.verdict} "
                                               f"({p.decided_by}{', a scout' if p.scout else ''}"
                                               f"{', a repeat' if p.repeat else ''}"
                                               f"{', servers still busy at its start' if p.started_busy else ''}"
                                               f"{f', from {p.workers} client processes' if p.workers > 1 else ''})"
                                               + (f"; client behind schedule: p99 send lag {p.send_lag_p99_ms:.0f} ms, "
                                                  f"offered {p.offered_rate or 0:.3g} req/s: not scored"
                                                  if p.client_lagged else "")))
        describe = backend.describe()
    probes = pd.DataFrame([p.row() for p in result.probes])
    probes.to_csv(run.artifacts / "bench_probes.csv", index=False)
    probe_timeline(result.probes, run)
    high = "unbounded" if result.interval_high is None else f"{result.interval_high:.3g}"
    log(f"[bench] goodput {result.goodput:.3f} req/s, 90% interval {result.interval_low:.3g}-{high} req/s (bracket, "
        f"the search's resolution: passed at {result.low}, failed at {result.high}; {result.stopped_because}; "
        f"its ends measured again: {result.repeat or 'not run'})"
        + ("; a LOWER BOUND: the client could not keep the pace on this host" if result.client_limited else ""))
    log("[bench] * one-sided 95% bounds on each probe's attainment from batch means of its outcomes in send order "
        "(requests in a queue are not independent draws); the interval inverts them over the probes")
    summary = {"experiment": "bench", "run_id": run.run_id, "backend": describe,
               "checks": {"searched": {"passed": bool(result.probes), "reason": f"{len(result.probes)} probe(s)"}},
               "search": {**result.summary(), "target": s.target, "slo": slo_of(params.slo).as_dict()},
               "probes": probes.to_dict(orient="records")}
    if s.arrival == "trace":                      # each probe replayed the trace, scaled to its rate
        summary["replay"] = [{"probe": p.index, "rate": p.rate, "speedup": p.speedup, **p.replay}
                             for p in result.probes if p.replay]
    run.write_json("summary.json", summary)
    return summary


def probe_timeline(probes: list, run: RunFolder) -> None:
    """With search.metrics_interval_s: the servers' gauges through every probe (bench_server_timeline.csv) and the
    figure of them beside the client's requests in flight, each probe shaded and named (.svg)."""
    gauges = pd.DataFrame([{"probe": p.index, "rate": p.rate, **row} for p in probes for row in p.timeline])
    if gauges.empty:
        return
    gauges.to_csv(run.artifacts / "bench_server_timeline.csv", index=False)
    sent = pd.DataFrame([{"probe": f"#{p.index} {p.rate:.3g}/s", "t_send_ns": r.t_send_ns, "t_end_ns": r.t_end_ns}
                         for p in probes for r in p.records if r.t_send_ns])
    if not sent.empty:
        plots.server_timeline(gauges, sent, run.artifacts / "bench_server_timeline.svg", span="probe")


def run_calibrate(params: BenchParams, run: RunFolder, backend: ServingBackend, log: Log = print) -> dict[str, Any]:
    """`--calibrate`: the placement model's costs (ctxkit.experiments.calibrate) into calibration.json, the points
    they were fitted on into bench_calibration.csv."""
    cal = calibrate.into_run(params, backend, run, "bench_calibration.csv", log)
    step = cal.step_cost()
    log(f"[bench] calibration: prefill TTFT = {cal.prefill['one']:.2f} + {cal.prefill['L']:.3g} L + "
        f"{cal.prefill['L2']:.3g} L^2 ms (R^2 {cal.prefill.r2:.3f}); decode step = {cal.decode['one']:.2f} + "
        f"{cal.decode['seqs']:.3g} seqs + {cal.decode['kv_tokens']:.3g} kv_tokens ms (R^2 {cal.decode.r2:.3f}); "
        f"KV {cal.limits.kv_capacity_tokens} tokens; request overhead {step.request_overhead_ms:.2f} ms")
    summary = {"experiment": "bench", "run_id": run.run_id,
               "checks": {"calibrated": {"passed": True, "reason": f"{cal.prefill.points} prefill and "
                                         f"{cal.decode.points} decode points fitted"}},
               "calibration": cal.model_dump(mode="json")}
    run.write_json("summary.json", summary)
    return summary


def run(params: BenchParams, run: RunFolder, backend: ServingBackend, log: Log = print,
        prepared: Optional[tuple[list[WorkItem], list[WorkItem]]] = None) -> dict[str, Any]:
    """The whole benchmark into `run`; the backend is started here (or attached) and stopped after."""
    if params.search is not None:
        return run_search(params, run, backend, log)
    if params.calibrate is not None:
        return run_calibrate(params, run, backend, log)
    items, warm = prepared or prepare(params)
    log(f"[bench] {len(items)} requests ({params.workload.dataset}), arrival {params.load.arrival}"
        f" rate {params.load.request_rate or 'inf'}; {len(warm)} warmup"
        + (f"; {params.load.workers} client processes" if params.load.workers > 1 else ""))
    with backend:
        max_len = backend.served_max_model_len()
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
        timeline = pd.DataFrame(profiling["timeline"])
        timeline.to_csv(run.artifacts / "bench_server_timeline.csv", index=False)
        sent = pd.DataFrame([{"span": "bench", "t_send_ns": r.t_send_ns, "t_end_ns": r.t_end_ns} for r in records
                             if not r.warmup and r.t_send_ns])
        if not sent.empty:      # the servers' queue and KV use beside the client's requests in flight
            plots.server_timeline(timeline, sent, run.artifacts / "bench_server_timeline.svg", span="span")
    latency = profiling["latency"]
    summary = {
        "experiment": "bench",
        "run_id": run.run_id,
        "backend": describe,
        "checks": {"success": {"passed": latency["failed"] == 0,
                               "reason": f"{latency['completed']}/{latency['requests']} completed"
                                         + (f"; errors {latency['errors_by_status']}" if latency["failed"] else "")}},
        "profiling": {"latency": latency, "server": profiling["server"],
                      "client_vs_server": profiling["client_vs_server"],
                      **({"client_workers": profiling["client_workers"]} if "client_workers" in profiling else {})},
        "vllm": latency["vllm"],   # `vllm bench serve`'s result keys, at the top as there
    }
    if params.workload.dataset == "trace":
        summary["replay"] = replay.fidelity(items, records, profiling["server"], params.load.arrival)
        r = summary["replay"]
        log(f"[bench] replay: lengths {'exact' if r['lengths_exact'] else 'NOT exact'}; trace implies "
            f"{r['implied_reusable_tokens']} reusable prompt tokens, servers hit {r['measured_prefix_hits']:.0f}; "
            + (f"send lag p50 {r['send_lag']['p50_ms']:.2f} / p99 {r['send_lag']['p99_ms']:.2f} ms"
               if r["send_lag"] else "no send lag")
            + ("" if r["on_trace_timestamps"] else f" (arrival {r['arrival']}: not on the trace's timestamps)"))
    run.write_json("summary.json", summary)
    return summary


