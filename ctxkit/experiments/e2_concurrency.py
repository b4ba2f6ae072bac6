"""E2 load sweep: throughput, latency percentiles and SLO goodput against load.

One server per configuration, started once, warmed up. Points: each closed-loop concurrency level, then each
Poisson rate; every point gets fresh prompts and is measured for `requests_per_point` requests (or `duration_s`).
Each finished point is saved to artifacts/e2_points/<point>.json at once, so `ctxkit run e2_concurrency --resume
RUN_DIR` finishes an interrupted sweep, skipping the points already done.
"""
from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ctxkit import plots
from ctxkit.backends.base import ServingBackend
from ctxkit.backends.topology import AttachedTopology
from ctxkit.collectors import replay
from ctxkit.collectors.gpu import GPUSampler
from ctxkit.collectors.latency import SLO, flat, slo_of
from ctxkit.experiments.common import check, make_backend
from ctxkit.load.engine import measure
from ctxkit.load.workloads import build_workload
from ctxkit.models import ModelCard
from ctxkit.params import E2Params, LoadParams
from ctxkit.records import JsonlWriter, read_records
from ctxkit.runs.folder import RunFolder, atomic_write_json
from ctxkit.schedulers.placement import server_gpu_roles

POINTS_DIR = "e2_points"


def points(params: E2Params) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"point": f"c{c}", "kind": "concurrency", "concurrency": c, "request_rate": None}
                                 for c in params.concurrency_levels]
    out += [{"point": f"r{r:g}", "kind": "poisson", "concurrency": None, "request_rate": r}
            for r in params.request_rates]
    out += [{"point": f"t{x:g}", "kind": "trace", "concurrency": None, "request_rate": None, "speedup": x}
            for x in params.trace_speedups]
    return out


def load_of(params: E2Params, point: dict[str, Any]) -> LoadParams:
    if point["kind"] == "trace":       # on the trace's timestamps (divided by the point's speedup)
        return LoadParams(arrival="trace", warmup_requests=0, duration_s=params.duration_s, workers=params.workers)
    if point["kind"] == "concurrency":
        return LoadParams(arrival="concurrency", concurrency=point["concurrency"], warmup_requests=0,
                          duration_s=params.duration_s, workers=min(params.workers, point["concurrency"]))
    return LoadParams(arrival="poisson", request_rate=point["request_rate"], warmup_requests=0,
                      duration_s=params.duration_s, workers=params.workers)


def point_items(params: E2Params, point: dict[str, Any], card: Any, index: int, run_id: str) -> list:
    """A point's requests: fresh prompts; a trace point's are the trace's own (token-exact, so its prefix reuse is
    the trace's), at most requests_per_point of them, under a cache salt of the run and point: the prefix cache
    reuses within the point what the trace implies, and nothing from another point or an earlier run."""
    if point["kind"] != "trace":
        return build_workload(params.workload, card, params.server.max_model_len, params.seed * 1000 + index,
                              count=params.requests_per_point, id_prefix=point["point"])
    workload = params.workload.model_copy(update={"trace_speedup": point["speedup"]})
    items = build_workload(workload, card, params.server.max_model_len, params.seed, count=params.requests_per_point,
                           id_prefix=point["point"])
    for it in items:
        it.body["cache_salt"] = f"{run_id}-{point['point']}"
    return items


def done_points(run: RunFolder) -> dict[str, dict[str, Any]]:
    folder = run.artifacts / POINTS_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def sweep(params: E2Params, run: RunFolder, log=print) -> dict[str, Any]:
    """Measure every point not done yet; returns {"server": ..., "gpu": ..., "skipped": [...]}."""
    card = ModelCard.load(params.server.model)
    todo = [p for p in points(params) if p["point"] not in done_points(run)]
    skipped = [p["point"] for p in points(params) if p not in todo]
    if skipped:
        log(f"[e2] resuming: {len(skipped)} point(s) already done ({', '.join(skipped)})")
    if not todo:
        return {"server": {}, "gpu": {"available": False, "reason": "nothing measured in this attempt"},
                "skipped": skipped}
    (run.artifacts / POINTS_DIR).mkdir(exist_ok=True)
    attempt = len(list(run.path.glob("notebook.attempt-*.ipynb")))
    slo = slo_of(params.slo)
    backend = make_backend(params, "server", run)
    sampler = GPUSampler(params.gpu_sample_interval_s, roles=server_gpu_roles(params.server.env, params.server.extra_args))
    if isinstance(backend, AttachedTopology):   # its GPUs need not be on this host: NVML here says nothing of them
        sampler.unavailable = "an attached deployment: ctxkit samples only GPUs of the servers it starts"
    timeline: list[dict[str, Any]] = []      # every instance's gauges, scraped every metrics_interval_s
    with backend, sampler, JsonlWriter(run.path / "requests.jsonl") as out:
        log(f"[e2] server up at {backend.base_url} ({backend.version().get('version')}); {len(todo)} point(s)")
        warm = build_workload(params.workload.model_copy(update={"num_prompts": max(1, params.warmup_requests)}), card,
                              params.server.max_model_len, params.seed + 99_991, id_prefix="warmup")
        for k, point in enumerate(todo):
            index = points(params).index(point)
            items = point_items(params, point, card, index, run.run_id)
            log(f"[e2] point {k + 1}/{len(todo)}: {point['point']} ({point['kind']})")
            recs, prof = measure(backend, items, load_of(params, point), seed=params.seed + index,
                                 timeout_s=params.request_timeout_s, slo=slo, out=out,
                                 warmup=warm if k == 0 and params.warmup_requests else None,
                                 metrics_interval_s=params.metrics_interval_s, label=f"e2 {point['point']}",
                                 tags={"point": point["point"], "attempt": attempt})
            timeline += [{"point": point["point"], **row} for row in prof["timeline"]]
            result = {**point, "attempt": attempt, "latency": prof["latency"], "server": server_view(prof, backend),
                      "client_vs_server": prof["client_vs_server"],
                      "client_workers": prof.get("client_workers", [])}   # per worker, with workers > 1
            if point["kind"] == "trace":
                result["replay"] = replay.fidelity(items, recs, prof["server"], "trace")
            atomic_write_json(run.artifacts / POINTS_DIR / f"{point['point']}.json", result, overwrite=True)
        describe = backend.describe()
    gpu = sampler.stop()
    suffix = '' if attempt == 0 else f'.attempt-{attempt}'
    sampler.write_timeline(run.artifacts / f"e2_gpu_timeline{suffix}.csv")
    if timeline:
        pd.DataFrame(timeline).to_csv(run.artifacts / f"e2_server_timeline{suffix}.csv", index=False)
    return {"server": describe, "gpu": gpu, "skipped": skipped}


def server_view(prof: dict[str, Any], backend: ServingBackend) -> dict[str, Any]:
    """A point's server-side deltas: the one server's, or under an attached topology every instance's by name."""
    return {"instances": prof["server"]} if isinstance(backend, AttachedTopology) else prof["server"][backend.name]


def instances_scraped(server: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
    """Every instance of an attached topology answered its metrics before and after every point."""
    names = [i["name"] for i in server["topology"]["instances"]]
    def scraped(point: dict[str, Any], name: str) -> bool:
        deltas = point["server"].get("instances", {}).get(name) or {}
        return bool(deltas) and not deltas.get("scrape_errors")

    gaps = [f"{p}: {n}" for p, d in done.items() for n in names if not scraped(d, n)]
    return check(not gaps, f"{len(names)} instance(s) scraped at {len(done)} point(s)" if not gaps
                 else f"not scraped: {', '.join(gaps)}")


def recorded_requests(run: RunFolder) -> dict[tuple[str, int], int]:
    """Measured (non-warmup) records in requests.jsonl per (point, attempt): what the summary can be recomputed
    from."""
    counts: dict[tuple[str, int], int] = {}
    if not run.has("requests.jsonl"):
        return counts
    for rec in read_records(run.path / "requests.jsonl"):
        if not rec.warmup and "point" in rec.tags:
            key = (rec.tags["point"], int(rec.tags.get("attempt", 0)))
            counts[key] = counts.get(key, 0) + 1
    return counts


def curve(params: E2Params, run: RunFolder) -> pd.DataFrame:
    done = done_points(run)
    rows = []
    for p in points(params):
        if p["point"] not in done:
            continue
        d = done[p["point"]]
        row = {"point": p["point"], "kind": p["kind"], "concurrency": p["concurrency"],
               "request_rate_target": p["request_rate"], **flat(d["latency"])}
        for key in ("slo_attainment", "request_goodput", "token_goodput"):
            row.setdefault(key, d["latency"].get(key, 0.0))
        workers = d.get("client_workers") or []
        row["client_workers"] = max(1, len(workers))
        row["worker_send_lag_p99_ms_max"] = max((w["send_lag_p99_ms"] for w in workers), default=None)
        if d.get("replay"):           # a trace point's fidelity: what was sent against what the trace says
            r = d["replay"]
            row.update(replay_lengths_exact=r["lengths_exact"], replay_implied_reuse=r["implied_reusable_tokens"],
                       replay_measured_hits=r["measured_prefix_hits"],
                       replay_send_lag_p99_ms=(r["send_lag"] or {}).get("p99_ms"))
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(params: E2Params, run: RunFolder, table: pd.DataFrame, extra: dict[str, Any]) -> dict[str, Any]:
    conc = table[table["kind"] == "concurrency"].sort_values("concurrency")
    tput = list(conc["output_throughput"])
    rises = len(tput) < 2 or tput[-1] > tput[0]
    recorded = recorded_requests(run)
    missing = {}
    for name, d in done_points(run).items():
        found = recorded.get((name, d.get("attempt", 0)), 0)
        if found != d["latency"]["requests"]:
            missing[name] = f"{found} recorded, {d['latency']['requests']} measured"
    failed = int(table["failed"].sum()) if "failed" in table else 0
    expected = len(points(params))
    trace = {name: d["replay"] for name, d in done_points(run).items() if d.get("replay")}
    summary = {
        "experiment": "e2_concurrency",
        "run_id": run.run_id,
        "checks": {
            "all_points_measured": check(len(table) == expected, f"{len(table)}/{expected} points"),
            "success": check(failed == 0, f"{failed} failed request(s) over the sweep"),
            "throughput_rises_with_concurrency": check(
                rises, "output tok/s " + " -> ".join(f"{t:.0f}" for t in tput) if tput else "no concurrency points"),
            "requests_recorded": check(not missing and bool(recorded),
                                       "every measured request of every point is in requests.jsonl" if not missing
                                       else f"records in requests.jsonl vs requests measured: {missing}"),
        },
        "slo": SLO(params.slo.ttft_ms, params.slo.tpot_ms, params.slo.e2e_ms).as_dict(),
        "profiling": {"server": {name: d["server"] for name, d in done_points(run).items()},
                      "gpu": extra.get("gpu", {})},
        "sweep": table.to_dict(orient="records"),
        "servers": [extra["server"]] if extra.get("server") else [],
        "resumed_points": extra.get("skipped", []),
    }
    if "topology" in (extra.get("server") or {}):   # an attached topology: every instance scraped at every point
        summary["checks"]["instances_scraped"] = instances_scraped(extra["server"], done_points(run))
    if trace:                          # trace points: each one's replay fidelity (ctxkit.collectors.replay)
        summary["replay"] = trace
        summary["checks"]["replay_lengths_exact"] = check(
            all(r["lengths_exact"] for r in trace.values()),
            f"every prompt as long as its trace row at {sum(r['lengths_exact'] for r in trace.values())}/"
            f"{len(trace)} trace point(s)")
    run.write_json("summary.json", summary)
    return summary


# (column of the sweep table, header a reader sees, decimals)
HEADLINE = [("point", "point", None), ("request_throughput", "req/s", 2), ("output_throughput", "out tok/s", 0),
            ("p50_ttft_ms", "TTFT p50 ms", 1), ("p95_ttft_ms", "TTFT p95 ms", 1), ("p99_ttft_ms", "TTFT p99 ms", 1),
            ("p50_tpot_ms", "TPOT p50 ms", 2), ("p95_tpot_ms", "TPOT p95 ms", 2), ("p95_e2e_ms", "E2E p95 ms", 0),
            ("slo_attainment", "in SLO %", 0), ("request_goodput", "goodput req/s", 2), ("failed", "failed", 0)]


def headline_table(table: pd.DataFrame):
    """The sweep's headline columns, short headers with units, rounded to what they mean (a Styler)."""
    cols = [(c, h, d) for c, h, d in HEADLINE if c in table]
    frame = table[[c for c, _, _ in cols]].rename(columns={c: h for c, h, _ in cols})
    if "in SLO %" in frame:
        frame["in SLO %"] = 100 * frame["in SLO %"]
    return frame.style.hide(axis="index").format({h: f"{{:.{d}f}}" for _, h, d in cols if d is not None},
                                                 na_rep="-")


def replay_table(replay: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per trace point: requests, lengths exact, the reuse the trace implies against the server's hits, send lag."""
    return pd.DataFrame([{"point": name, "requests": r["requests"], "lengths exact": r["lengths_exact"],
                          "implied reusable tokens": r["implied_reusable_tokens"],
                          "server prefix hits": r["measured_prefix_hits"],
                          "send lag p99 ms": (r["send_lag"] or {}).get("p99_ms")} for name, r in replay.items()])


def saturation(table: pd.DataFrame) -> str:
    """Where throughput stops growing: the first concurrency level after which it gains < 10%."""
    conc = table[table["kind"] == "concurrency"].sort_values("concurrency")
    t = list(conc["output_throughput"])
    c = list(conc["concurrency"])
    for i in range(1, len(t)):
        if t[i] < 1.10 * t[i - 1]:
            return f"throughput saturates near concurrency {int(c[i - 1])} ({t[i - 1]:.0f} output tok/s)"
    return f"throughput still rising at concurrency {int(c[-1])} ({t[-1]:.0f} output tok/s)" if t else ""


def write_artifacts(run: RunFolder, table: pd.DataFrame) -> dict[str, Any]:
    table.to_csv(run.artifacts / "e2_concurrency_curve.csv", index=False)
    conc = table[table["kind"] == "concurrency"].sort_values("concurrency")
    figs = {}
    if len(conc):
        figs = plots.sweep_curves(conc, "concurrency", run.artifacts / "e2", xlabel="concurrent clients")
    rate = table[table["kind"] == "poisson"].sort_values("request_rate_target")
    if len(rate):
        figs.update({f"rate_{k}": v for k, v in plots.sweep_curves(
            rate, "request_rate_target", run.artifacts / "e2_rate", xlabel="Poisson rate (req/s)").items()})
    timeline = server_timeline_figure(run)
    if timeline is not None:
        figs["server_timeline"] = timeline
    return figs


def server_timeline_figure(run: RunFolder):
    """The servers' gauges beside the client's requests in flight over the whole sweep (every attempt's points on
    one monotonic clock), with NVML's view of the GPUs under them where sampled; None when no gauges were scraped
    (metrics_interval_s null)."""
    files = sorted(run.artifacts.glob("e2_server_timeline*.csv"))
    frames = [f for f in (pd.read_csv(p) for p in files) if "t_ns" in f and not f.empty]
    if not frames:
        return None
    timeline = pd.concat(frames, ignore_index=True)
    points = set(timeline["point"])
    requests = pd.DataFrame([{"point": r.tags.get("point"), "t_send_ns": r.t_send_ns, "t_end_ns": r.t_end_ns}
                             for r in read_records(run.path / "requests.jsonl")
                             if not r.warmup and r.tags.get("point") in points])
    if requests.empty:
        return None
    gpu = [f for f in (pd.read_csv(p) for p in sorted(run.artifacts.glob("e2_gpu_timeline*.csv"))) if "t_ns" in f]
    return plots.server_timeline(timeline, requests, run.artifacts / "e2_server_timeline.svg",
                                 gpu=pd.concat(gpu, ignore_index=True) if gpu else None)
