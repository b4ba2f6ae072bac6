"""E4 goodput search: for each serving topology and SLO setting, the highest Poisson request rate served with SLO
attainment >= the target (DistServe's goodput), divided by the GPUs (or CPU core sets) the topology uses. With a trace
workload the probes replay the trace on its own timestamps, scaled to the probe's rate (search.arrival=trace, the
default there): the search is over the trace's speedup, and each probe's replay fidelity is in summary.replay.

Each topology is started once and kept up for all of its probes (ctxkit.load.search). Every probe's requests go to
requests.jsonl (tagged with topology, SLO setting, probe and rate); every probe is a row of e4_probes.csv. From the
probe that passed at the goodput rate: attainment against SLO scale (every objective times s), and for every probe
the misses by cause with where the time went (the servers' own queue/prefill/decode histograms over the probe, and
for disaggregated topologies the router's per-request breakdown of the missed requests).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pandas as pd

from ctxkit import deployment, plots
from ctxkit.backends.topology import AttachedTopology
from ctxkit.collectors import kv_transfer
from ctxkit.collectors.attainment import outcome, slo_scale_curve
from ctxkit.collectors.gpu import GPUSampler, write_timeline
from ctxkit.collectors.latency import SLO, request_latency
from ctxkit.experiments.common import check
from ctxkit.load.search import Probe, SearchPolicy, SearchResult, search, trace_window_fits
from ctxkit.load.workloads import build_workload
from ctxkit.models import ModelCard
from ctxkit.params import E4Params, NamedSLO, TopologyParams
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder
from ctxkit.runs.placements import intervals_separate
from ctxkit.schedulers.broker import cross_layer_blocks
from ctxkit.schedulers.kv_store import block_size_of
from ctxkit.schedulers.placement import devices_used, gpu_roles
from ctxkit.schedulers.topology import build_pool

Log = Callable[[str], None]


@dataclass
class TopologyResult:
    topology: str
    kind: str
    devices: float                               # an attached topology's file may state a fraction
    unit: str                                    # GPU | CPU core set
    placement: dict[str, Any]
    searches: dict[str, SearchResult] = field(default_factory=dict)       # SLO name -> result
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    describe: dict[str, Any] = field(default_factory=dict)
    gpu: Optional[GPUSampler] = None             # NVML telemetry of its GPUs while it was up, tagged with roles
    error: Optional[str] = None                  # a topology that could not be searched: why (the run goes on)
    config: str = ""                             # what the arm ran (arm_config)


def policy_of(params: E4Params) -> SearchPolicy:
    return SearchPolicy.of(params.search, params.seed)


def slo_of(named: NamedSLO) -> SLO:
    return SLO(named.ttft_ms, named.tpot_ms, named.e2e_ms)


def check_workload(params: E4Params) -> None:
    """Before any server starts: a trace searched on its timestamps must hold enough rows in its window for one
    probe (its unscored head and min_requests scored ones); every probe replays the window's first rows."""
    if params.search.arrival != "trace":
        return
    card = ModelCard.load(params.server.model)
    trace_window_fits(params.workload, params.search, card, params.server.max_model_len, params.seed)


def topologies(params: E4Params) -> list[TopologyParams]:
    """What the run searches: the listed topologies, or with backend=topology the attached deployment alone."""
    if params.backend != "topology":
        return params.topologies
    assert params.topology_file, "checked by params"
    spec = deployment.load(params.topology_file)
    return [TopologyParams(name=spec.name, kind="disaggregated" if spec.disaggregated else "aggregated")]


def open_pool(params: E4Params, run: RunFolder, spec: TopologyParams) -> tuple[Any, float, str]:
    """(the backend to search, the devices it uses, their unit): a pool ctxkit starts, or the attached deployment
    with the GPUs its topology file states."""
    if params.backend == "topology":
        assert params.topology_file, "checked by params"
        attached = AttachedTopology.from_file(params.topology_file, name=spec.label)
        return attached, attached.spec.devices, attached.spec.unit
    pool = build_pool(params.server, spec, seed=params.seed, log_dir=run.logs, ray=params.ray)
    return pool, devices_used(pool.placement), "GPU" if pool.placement["kind"] == "gpu" else "CPU core set"


def measure_topology(params: E4Params, run: RunFolder, spec: TopologyParams, k: int, out: JsonlWriter,
                     log: Log = print) -> TopologyResult:
    """Start the topology (or check the attached one), warm it up, run one search per SLO setting, stop it."""
    card = ModelCard.load(params.server.model)
    pool, devices, unit = open_pool(params, run, spec)
    log(f"[e4] {spec.label}: starting {len(getattr(pool, 'servers', []))} server(s) ..." if params.backend == "vllm"
        else f"[e4] {spec.label}: attached; checking every instance ...")
    sampler = GPUSampler(params.gpu_sample_interval_s, roles=gpu_roles(pool.placement),
                         tags={"topology": spec.label})
    if params.backend == "topology" or params.ray is not None:   # its GPUs may be on other hosts: NVML here
        sampler.unavailable = ("an attached deployment" if params.ray is None else "servers placed through Ray") + \
            ": ctxkit samples only GPUs of servers it starts on this host"
    with pool, sampler:
        result = TopologyResult(spec.label, spec.kind, devices, unit, pool.placement, gpu=sampler,
                                config=arm_config(params, spec))
        log(f"[e4] {spec.label}: up; {pool.placement['reason']}; {result.devices} {result.unit}(s)")
        for it in build_workload(params.workload, card, params.server.max_model_len, params.seed + 99_991,
                                 count=params.warmup_requests, id_prefix=f"t{k}-warmup") \
                if params.warmup_requests else []:
            rec = pool.generate(it.prompt, it.max_tokens, request_id=it.request_id,
                                timeout_s=params.request_timeout_s)
            rec.warmup, rec.tags = True, {"topology": spec.label, "set": "warmup"}
            out.write(rec)
        for j, named in enumerate(params.slos):
            def items(probe: int, batch: int, n: int, _j: int = j):   # fresh prompts for every probe
                seed = params.seed * 1_000_003 + k * 10_007 + _j * 1_009 + probe * 31 + batch
                return build_workload(params.workload, card, params.server.max_model_len, seed, count=n,
                                      id_prefix=f"t{k}s{_j}p{probe}b{batch}")

            def keep(records: list[RequestRecord], _name: str = named.name) -> None:
                for rec in records:
                    rec.tags.update({"topology": spec.label, "slo": _name})
                    out.write(rec)

            def progress(p: Probe, _name: str = named.name) -> None:
                log(f"[e4] {spec.label} / {_name}: probe {p.index} at {p.rate:.3g} req/s: {p.verdict} "
                    f"({p.met}/{p.decided} met, {p.decided_by}{', a scout' if p.scout else ''}"
                    f"{f', cut off with {p.backlog} in flight' if p.early_stop else ''})")

            log(f"[e4] {spec.label} / {named.name}: searching from {params.search.start_rate:g} req/s")
            res = search(pool, items, slo_of(named), policy_of(params), timeout_s=params.request_timeout_s,
                         on_probe=progress, on_records=keep)
            log(f"[e4] {spec.label} / {named.name}: goodput {res.goodput:.3g} req/s ({res.stopped_because})")
            result.searches[named.name] = res
        result.handoffs = pool.handoffs()
        result.describe = pool.describe()
    return result


def measure_or_record(params: E4Params, run: RunFolder, spec: TopologyParams, k: int, out: JsonlWriter,
                      log: Log = print) -> TopologyResult:
    """measure_topology, except that a topology whose servers fail (e.g. a placement this vLLM refuses) becomes a
    result with its error: one bad topology must not cost the others' searches. Its probes so far stay in
    requests.jsonl; the run's checks fail and the conclusion names it."""
    try:
        return measure_topology(params, run, spec, k, out, log)
    except Exception as exc:  # noqa: BLE001 - recorded in e4_goodput.csv and the conclusion; servers' logs in logs/
        log(f"[e4] {spec.label}: FAILED: {type(exc).__name__}: {str(exc)[:400]}")
        return TopologyResult(spec.label, spec.kind, 0, "", {}, error=f"{type(exc).__name__}: {str(exc)[:2000]}",
                              config=arm_config(params, spec))


def probes_table(results: list[TopologyResult]) -> pd.DataFrame:
    rows = [{"topology": r.topology, "slo": name, **p.row()}
            for r in results for name, res in r.searches.items() for p in res.probes]
    return pd.DataFrame(rows)


def compilation(params: E4Params, spec: Optional[TopologyParams] = None) -> str:
    """How the servers (of one arm, with `spec`) ran their model: compiled (torch.compile and CUDA graphs on a GPU)
    or eager."""
    server = spec.server_for(params.server) if spec else params.server
    eager = server.enforce_eager or "--enforce-eager" in server.extra_args
    return "attached" if params.backend == "topology" else ("eager" if eager else "compiled")


def arms_alike(params: E4Params) -> dict[str, Any]:
    """The check that every arm ran its model the same way: an eager arm against a compiled one compares
    compilation, not placement."""
    ran = {spec.label: compilation(params, spec) for spec in topologies(params)}
    return check(len(set(ran.values())) <= 1, "; ".join(f"{t} {c}" for t, c in ran.items()) +
                 ("" if len(set(ran.values())) <= 1 else ": an eager arm is compared with a compiled one"))


def arm_config(params: E4Params, spec: TopologyParams) -> str:
    """What an arm ran, in a line for the table beside its goodput: compilation, KV block size, and for a
    disaggregated arm its connector, KV buffer and layout."""
    if params.backend == "topology":
        return "attached deployment (its own configuration)"
    server = spec.server_for(params.server)
    args = server.extra_args
    given = any(a == "--block-size" or a.startswith("--block-size=") for a in args)
    block = str(block_size_of(args, "gpu")) if given else "vLLM's default"     # the last given wins, as in vLLM
    parts = [compilation(params, spec), f"block {block}"]
    if spec.kind == "disaggregated":
        parts.append(spec.connector + (f", buffer {spec.kv_buffer_device}" if spec.connector == "nixl" else ""))
        parts.append("cross-layer blocks" if cross_layer_blocks(spec.connector_extra) else "per-layer blocks")
    if server.env.get("VLLM_USE_V2_MODEL_RUNNER") == "0":
        parts.append("V1 model runner")
    parts.append(f"{params.search.workers} client process(es) at the start")
    return "; ".join(parts)


def goodput_table(params: E4Params, results: list[TopologyResult]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for r in results:
        if r.error:
            rows += [{"topology": r.topology, "kind": r.kind, "slo": s.name, "config": r.config, "error": r.error}
                     for s in params.slos]
        for name, res in r.searches.items():
            rows.append({"topology": r.topology, "kind": r.kind, "slo": name, "devices": r.devices, "config": r.config,
                         "unit": r.unit, "goodput": res.goodput, "low": res.low, "high": res.high,
                         "goodput_per_device": res.goodput / r.devices,
                         "per_device_low": (res.low or 0.0) / r.devices,
                         "per_device_high": res.high / r.devices if res.high is not None else None,
                         "interval_low": res.interval_low, "interval_high": res.interval_high,
                         "per_device_interval_low": res.interval_low / r.devices,
                         "per_device_interval_high": res.interval_high / r.devices
                         if res.interval_high is not None else None,
                         "repeat": res.repeat, "client_limited": res.client_limited,
                         "converged": res.converged, "stopped_because": res.stopped_because,
                         "probes": len(res.probes), "target": params.search.target,
                         "curve_probe": probe.index if (probe := at_goodput(res)) else None})
    return pd.DataFrame(rows)


def at_goodput(res: SearchResult) -> Optional[Probe]:
    """The passing probe at the goodput rate (the records the SLO-scale curve is drawn from); when no probe passed,
    the one at the lowest rate probed: how far its objectives would have to stretch to meet the target."""
    passing = [p for p in res.probes if p.verdict == "pass" and p.rate == res.low]
    if passing:
        return passing[-1]
    return min(res.probes, key=lambda p: p.rate) if res.probes and res.low is None else None


def slo_scale_table(params: E4Params, results: list[TopologyResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        for named in params.slos:
            res = r.searches.get(named.name)           # absent for a topology that could not be searched
            probe = at_goodput(res) if res else None
            if probe is None:
                continue
            for row in slo_scale_curve(probe.records, slo_of(named), params.slo_scales):
                rows.append({"topology": r.topology, "slo": named.name, "rate": probe.rate,
                             "probe_verdict": probe.verdict, **row})
    return pd.DataFrame(rows)


ROLE_MEANS = ("mean_queue_ms", "mean_prefill_ms", "mean_decode_ms")


def miss_table(params: E4Params, results: list[TopologyResult]) -> pd.DataFrame:
    """Per probe: misses by cause, the servers' own means by role over the probe, and for disaggregated
    topologies the mean router breakdown of the requests that missed."""
    rows = []
    for r in results:
        by_request = {h["request_id"]: h for h in r.handoffs}
        for name, res in r.searches.items():
            slo = slo_of(next(s for s in params.slos if s.name == name))
            for p in res.probes:
                row: dict[str, Any] = {"topology": r.topology, "slo": name, "probe": p.index, "rate": p.rate,
                                       "missed": p.missed, **{f"missed_{k}": v for k, v in p.misses_by_cause.items()}}
                for role in ("aggregated", "prefill", "decode"):
                    deltas = [d for server, d in p.server.items() if _role(server, r.placement) == role]
                    for key in ROLE_MEANS:
                        vals = [d[key] for d in deltas if d.get(key) is not None]
                        if vals:
                            row[f"{role}_{key}"] = sum(vals) / len(vals)
                missed_ids = {rec.request_id for rec in p.records
                              if not rec.warmup and outcome(rec, slo).met is False}
                frame = kv_transfer.handoff_frame([by_request[i] for i in missed_ids if i in by_request])
                for col in ("router_ms", "prefill_ms", "kv_check_ms", "decode_first_ms"):
                    if not frame.empty and col in frame and frame[col].notna().any():
                        row[f"missed_mean_{col}"] = float(frame[col].mean())
                rows.append(row)
    return pd.DataFrame(rows)


def others_prefilling(windows: list[tuple[int, int, int, str]], start: Optional[int], end: Optional[int],
                      own: str) -> int:
    """Prompt tokens of the other requests waiting for their first token (sent, no first token yet) at some time in
    [start, end]: the prefill work that ran, or queued, beside this request's own."""
    if start is None or end is None:
        return 0
    return sum(tokens for s, f, tokens, rid in windows if rid != own and s < end and f > start)


def missed_requests(params: E4Params, results: list[TopologyResult]) -> pd.DataFrame:
    """Every scored request that missed, per probe: which objective, its own size and latencies, and where its time
    went as the client sees it: the prompt tokens of other requests awaiting their first token while it awaited its
    own (TTFT) and while it decoded (TPOT: a decode step shares the batch with their prefill chunks on an aggregated
    server), and for disaggregated topologies the router's breakdown of it (router, prefill, KV check, decode's
    first token)."""
    rows = []
    for r in results:
        breakdown = kv_transfer.handoff_frame(r.handoffs)      # a request sent again has its last handoff here
        by_request = breakdown.drop_duplicates("request_id", keep="last").set_index("request_id") \
            if len(breakdown) else None
        for name, res in r.searches.items():
            slo = slo_of(next(s for s in params.slos if s.name == name))
            for p in res.probes:
                sent = [rec for rec in p.records if rec.t_send_ns]       # the warmup's prefill counts beside it
                windows = [(rec.t_send_ns, rec.t_first_ns or rec.t_end_ns or rec.t_send_ns, rec.prompt_tokens,
                            rec.request_id) for rec in sent]
                for rec in (rec for rec in sent if not rec.warmup):
                    o = outcome(rec, slo)
                    if o.met is False:
                        rows.append({"topology": r.topology, "slo": name, "probe": p.index, "rate": p.rate,
                                     **missed_row(rec, o.cause, windows, by_request)})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=MISSED_COLUMNS)   # the header, for a reader


def missed_row(rec: RequestRecord, cause: str, windows: list[tuple[int, int, int, str]],
               by_request: Optional[pd.DataFrame]) -> dict[str, Any]:
    """One missed request's row of e4_missed_requests.csv (after its topology, SLO, probe and rate)."""
    lat = request_latency(rec)
    row: dict[str, Any] = {
        "request_id": rec.request_id, "trace_row": rec.tags.get("trace_row"), "missed": cause, "status": rec.status,
        "prompt_tokens": rec.prompt_tokens, "output_tokens": rec.n_out, "ttft_ms": lat.ttft_ms, "tpot_ms": lat.tpot_ms,
        "others_prefill_tokens_during_ttft": others_prefilling(windows, rec.t_send_ns, rec.t_first_ns or rec.t_end_ns,
                                                               rec.request_id),
        "others_prefill_tokens_during_decode": others_prefilling(windows, rec.t_first_ns, rec.t_last_ns,
                                                                 rec.request_id)}
    if by_request is not None and rec.request_id in by_request.index:
        h = by_request.loc[rec.request_id]
        row |= {k: h[k] for k in ("router_ms", "prefill_ms", "kv_check_ms", "decode_first_ms")}
    return row


MISSED_COLUMNS = ["topology", "slo", "probe", "rate", "request_id", "trace_row", "missed", "status", "prompt_tokens",
                  "output_tokens", "ttft_ms", "tpot_ms", "others_prefill_tokens_during_ttft",
                  "others_prefill_tokens_during_decode"]


def _role(server: str, placement: dict[str, Any]) -> str:
    """A server's role as its placement record states it (pools record each server's name and role; so does an
    attached topology's file); a server the record does not name serves both phases."""
    stated = {s.get("name"): s.get("role") for s in placement.get("servers") or []}
    return str(stated.get(server) or "aggregated")


def summarize(params: E4Params, run: RunFolder, results: list[TopologyResult]) -> dict[str, Any]:
    probes, goodput = probes_table(results), goodput_table(params, results)
    every_probe = all(len(res.probes) >= 1 for r in results for res in r.searches.values())
    expected = len(topologies(params)) * len(params.slos)
    searched = sum(len(r.searches) for r in results)
    recorded = sum(1 for r in results for res in r.searches.values() for p in res.probes
                   for rec in p.records if not rec.warmup)
    summary = {
        "experiment": "e4_goodput",
        "run_id": run.run_id,
        "checks": {
            "every_topology_searched": check(searched == expected and every_probe,
                                             f"{searched}/{expected} (topology, SLO) searches, each with probes"),
            "probes_within_caps": check(all(sum(not p.repeat for p in res.probes) <= params.search.max_probes
                                            for r in results for res in r.searches.values()),
                                        f"at most {params.search.max_probes} probes per search (and the repeat "
                                        "check's two)"),
            "arms_compiled_alike": arms_alike(params),
            "requests_recorded": check(recorded == int(probes["sent"].sum()) if len(probes) else False,
                                       f"{recorded} scored requests in requests.jsonl for "
                                       f"{int(probes['sent'].sum()) if len(probes) else 0} sent by probes"),
        },
        "target": params.search.target,
        "slos": [s.model_dump() for s in params.slos],
        "goodput": goodput.to_dict(orient="records"),
        "comparison": compare(goodput),
        "client": client_pace(params, probes),
        "probes": probes.to_dict(orient="records"),
        "servers": [r.describe for r in results if not r.error],
        "gpu_assignment": {r.topology: r.placement for r in results if not r.error},
        "failed_topologies": {r.topology: r.error for r in results if r.error},
        "profiling": {"gpu": {r.topology: r.gpu.stop() if r.gpu else {"available": False, "reason": "not sampled"}
                              for r in results if not r.error}},
    }
    if params.search.arrival == "trace":
        summary["replay"] = replay_rows(results)
        summary["checks"]["replay_lengths_exact"] = check(
            bool(summary["replay"]) and all(r["lengths_exact"] for r in summary["replay"]),
            f"every prompt as long as its trace row in {len(summary['replay'])} probe(s)")
    run.write_json("summary.json", summary)
    return summary


def replay_rows(results: list[TopologyResult]) -> list[dict[str, Any]]:
    """Each trace probe's fidelity (ctxkit.collectors.replay): lengths, the prefix reuse the trace implies against
    the servers' hits over the probe, send lag against the scaled timestamps."""
    keep = ("requests", "lengths_exact", "implied_reusable_tokens", "measured_prefix_hits", "measured_over_implied",
            "send_lag", "arrival_bursts")
    return [{"topology": r.topology, "slo": name, "probe": p.index, "rate": p.rate, "speedup": p.speedup,
             **{k: p.replay.get(k) for k in keep}}
            for r in results for name, res in r.searches.items() for p in res.probes if p.replay]


def client_pace(params: E4Params, probes: pd.DataFrame) -> dict[str, Any]:
    """Probes whose client fell behind its Poisson schedule (p99 send lag over the bound): their offered rate is
    below the nominal one, so a pass there may overstate what the servers sustain at that rate."""
    bound = params.search.lag_bound_ms
    lagged = probes[probes["client_lagged"]] if len(probes) and "client_lagged" in probes else probes.iloc[0:0]
    return {"lag_bound_ms": bound,
            "lagged_probes": [{"topology": r["topology"], "slo": r["slo"], "rate": r["rate"],
                               "offered_rate": r["offered_rate"], "send_lag_p99_ms": r["send_lag_p99_ms"],
                               "verdict": r["verdict"]} for _, r in lagged.iterrows()]}


def compare(goodput: pd.DataFrame) -> list[dict[str, Any]]:
    """Per SLO setting: the winner by per-device goodput, the ratio to the runner-up, and whether their 90% confidence
    intervals separate (the winner's lower end above the runner-up's upper end): only then is the order a finding.
    The brackets are the searches' resolution, not an interval on the goodput."""
    out = []
    if "goodput_per_device" not in goodput:
        return out
    for slo, g in goodput[goodput["goodput_per_device"].notna()].groupby("slo", sort=False):
        g = g.sort_values("goodput_per_device", ascending=False)
        best = g.iloc[0]
        row: dict[str, Any] = {"slo": slo, "winner": best["topology"],
                               "winner_per_device": float(best["goodput_per_device"])}
        if len(g) > 1:
            second = g.iloc[1]
            row.update({"runner_up": second["topology"], "runner_up_per_device": float(second["goodput_per_device"]),
                        "ratio": float(best["goodput_per_device"] / second["goodput_per_device"])
                        if second["goodput_per_device"] else None,
                        "intervals_separate": intervals_separate(best, second)})
        dis = g[g["kind"] == "disaggregated"]
        agg = g[g["kind"] == "aggregated"]
        if len(dis) and len(agg) and agg["goodput_per_device"].max() > 0:
            row["disaggregated_over_aggregated"] = float(dis["goodput_per_device"].max()
                                                         / agg["goodput_per_device"].max())
        out.append(row)
    return out


def interval_text(row: dict[str, Any]) -> str:
    """A goodput row's 90% interval per device, and its bracket (the search's resolution)."""
    def fmt(x: Any) -> str:
        return "unbounded" if x is None or pd.isna(x) else format(x, ".3g")
    if "per_device_interval_low" not in row:
        return f"bracket {fmt(row['per_device_low'])}-{fmt(row['per_device_high'])}; no interval (older summary)"
    low, high, answer = row["per_device_interval_low"], row.get("per_device_interval_high"), row["goodput_per_device"]
    text = f"90% interval {fmt(low)}-{fmt(high)}, bracket {fmt(row['per_device_low'])}-{fmt(row['per_device_high'])}"
    if answer < low or (high is not None and not pd.isna(high) and answer >= high):
        # the bracket reads each rate's last probe, the interval every probe: where they part, probes disagreed
        text += "; the goodput lies outside its own interval: its probes disagree at this size (see the repeat check)"
    return text


def none_passed(summary: dict[str, Any], slo: str) -> str:
    """The conclusion for an SLO setting no topology met at any rate probed: each one's lowest probe and why its
    search stopped."""
    text = f"**{slo}**: no topology met the {summary['target']:.0%} target at any rate probed"
    for g in (r for r in summary["goodput"] if r["slo"] == slo and searched(r)):
        probes = [p for p in summary["probes"] if p["slo"] == slo and p["topology"] == g["topology"]]
        if probes:
            p = min(probes, key=lambda p: p["rate"])
            share = "no request decided" if pd.isna(p.get("attainment")) else \
                f"{p['attainment']:.1%} met (95% interval {p['wilson_low']:.1%}-{p['wilson_high']:.1%})"
            text += f"; {g['topology']} at its lowest, {p['rate']:.3g} req/s: {share}, stopped: {g['stopped_because']}"
    return text + ". The SLO-scale figure, drawn at that rate, shows how far the objectives would have to stretch."


def burst_note(summary: dict[str, Any]) -> Optional[str]:
    """A trace whose rows come in bursts (rows sharing a timestamp): a rate search scales the gaps between bursts,
    never a burst, which a reader of its goodput should know."""
    bursts = [r["arrival_bursts"] for r in summary.get("replay") or [] if r.get("arrival_bursts")]
    if not bursts or max(b["largest"] for b in bursts) < 2:
        return None
    share = max(b["rows_in_bursts"] or 0.0 for b in bursts)
    return (f"The trace's rows arrive in bursts (up to {max(b['largest'] for b in bursts)} rows at one timestamp; "
            f"{share:.0%} of a probe's rows share their timestamp with another): scaling the rate stretches the gaps "
            "between bursts, not the bursts, so each burst's own contention is there at every rate.")


def conclusions(summary: dict[str, Any]) -> str:
    parts = []
    for c in summary["comparison"]:
        g = {(r["slo"], r["topology"]): r for r in summary["goodput"]}
        winner = g[(c["slo"], c["winner"])]
        if not c["winner_per_device"]:
            parts.append(none_passed(summary, c["slo"]))
            continue
        text = (f"**{c['slo']}**: {c['winner']} serves the most per {winner['unit']}: "
                f"{c['winner_per_device']:.3g} req/s ({interval_text(winner)})")
        if isinstance(winner.get("repeat"), str) and winner["repeat"] != "repeated":     # NaN where not run
            text += f"; its ends, measured again: {winner['repeat']}"
        if winner.get("client_limited") is True:
            text += "; a LOWER BOUND: no number of client processes on this host kept the pace above it"
        if "runner_up" in c and c.get("ratio") is None:        # the runner-up met the target at no rate probed
            text += f"; {c['runner_up']} met the target at no rate probed"
        elif "runner_up" in c:
            text += (f", {c['ratio']:.2f}x {c['runner_up']} ({c['runner_up_per_device']:.3g}, "
                     f"{interval_text(g[(c['slo'], c['runner_up'])])}); the 90% intervals "
                     f"{'separate' if c['intervals_separate'] else 'overlap, so the order is not settled'}")
        if "disaggregated_over_aggregated" in c:
            text += f". Disaggregated / aggregated per {winner['unit']}: {c['disaggregated_over_aggregated']:.2f}"
        parts.append(text + ".")
    if note := burst_note(summary):
        parts.append(note)
    lagged = (summary.get("client") or {}).get("lagged_probes") or []
    if lagged:
        worst = max(lagged, key=lambda r: r["send_lag_p99_ms"] or 0)
        parts.append(f"The client fell behind its schedule in {len(lagged)} probe(s) (p99 send lag over "
                     f"{summary['client']['lag_bound_ms']:g} ms; worst {worst['send_lag_p99_ms']:.0f} ms at "
                     f"{worst['rate']:.3g} req/s, {worst['topology']}): their offered load was below the nominal "
                     f"rate: each was measured again from more client processes and none is scored.")
    for topology, error in summary.get("failed_topologies", {}).items():
        parts.append(f"{topology} could not be searched: {error[:200]}.")
    failed = [k for k, v in summary["checks"].items() if not v["passed"]]
    parts.append("All checks passed." if not failed else f"Checks FAILED: {', '.join(failed)}.")
    return " ".join(parts)


def write_artifacts(params: E4Params, run: RunFolder, results: list[TopologyResult]) -> list:
    probes, goodput = probes_table(results), goodput_table(params, results)
    scale, misses = slo_scale_table(params, results), miss_table(params, results)
    probes.to_csv(run.artifacts / "e4_probes.csv", index=False)
    goodput.to_csv(run.artifacts / "e4_goodput.csv", index=False)
    scale.to_csv(run.artifacts / "e4_slo_scale.csv", index=False)
    misses.to_csv(run.artifacts / "e4_misses.csv", index=False)
    missed_requests(params, results).to_csv(run.artifacts / "e4_missed_requests.csv", index=False)
    write_timeline([r.gpu for r in results if r.gpu], run.artifacts / "e4_gpu_timeline.csv")
    gauges = [{"topology": r.topology, "slo": slo, "probe": p.index, "rate": p.rate, **row}
              for r in results for slo, res in r.searches.items() for p in res.probes for row in p.timeline]
    if gauges:
        pd.DataFrame(gauges).to_csv(run.artifacts / "e4_server_timeline.csv", index=False)
    figs = [plots.attainment_vs_rate(probes, params.search.target, run.artifacts / "e4_attainment.svg"),
            plots.goodput_bars(goodput, run.artifacts / "e4_goodput_per_device.svg")]
    if len(scale):
        figs.append(plots.slo_scale(scale, params.search.target, run.artifacts / "e4_slo_scale.svg"))
    figs += [f for f in (topology_timeline(r, run) for r in results) if f is not None]
    return figs


def topology_timeline(result: TopologyResult, run: RunFolder):
    """One topology's servers through its probes (kept up between them): their gauges beside the client's requests
    in flight, each probe shaded and named by its rate, NVML under them where sampled
    (e4_server_timeline_<topology>.svg); None without scrapes."""
    probes = [(slo, p) for slo, res in result.searches.items() for p in res.probes]
    gauges = pd.DataFrame([row for _, p in probes for row in p.timeline])
    many = len(result.searches) > 1             # one label per probe: rates repeat across SLO settings
    requests = pd.DataFrame([{"probe": (f"{slo} " if many else "") + f"#{p.index} {p.rate:.3g}/s",
                              "t_send_ns": r.t_send_ns, "t_end_ns": r.t_end_ns}
                             for slo, p in probes for r in p.records if r.t_send_ns])
    if gauges.empty or requests.empty:
        return None
    gpu = pd.DataFrame(result.gpu.rows) if result.gpu is not None and result.gpu.rows else None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", result.topology).strip("-")
    return plots.server_timeline(gauges, requests, run.artifacts / f"e4_server_timeline_{name}.svg", gpu=gpu,
                                 span="probe")


def _styled(frame: pd.DataFrame, decimals: dict[str, int]):
    return frame.style.hide(axis="index").format({c: f"{{:.{d}f}}" for c, d in decimals.items() if c in frame},
                                                 na_rep="-")


def goodput_view(summary: dict[str, Any]):
    g = pd.DataFrame(summary["goodput"])
    cols = {"topology": "topology", "slo": "SLO", "devices": "devices", "config": "ran", "goodput": "goodput req/s",
            "interval_low": "90% CI low", "interval_high": "90% CI high",
            "low": "bracket: pass at", "high": "bracket: fail at", "goodput_per_device": "per device",
            "per_device_interval_low": "per dev CI low", "per_device_interval_high": "per dev CI high",
            "repeat": "ends measured again", "probes": "probes", "stopped_because": "stopped", "error": "error"}
    g = g[[c for c in cols if c in g]].rename(columns=cols)
    return _styled(g, {"goodput req/s": 2, "90% CI low": 2, "90% CI high": 2, "bracket: pass at": 2,
                       "bracket: fail at": 2, "per device": 2, "per dev CI low": 2, "per dev CI high": 2})


def probes_view(probes: pd.DataFrame):
    cols = {"topology": "topology", "slo": "SLO", "index": "probe", "rate": "rate", "sent": "sent",
            "decided": "decided", "attainment": "attained", "attainment_low": "low 95%",
            "attainment_high": "high 95%", "n_eff": "n_eff", "verdict": "verdict", "scout": "scout", "repeat": "repeat",
            "settle_s": "settle", "started_busy": "busy", "decided_by": "decided by", "backlog": "backlog",
            "send_lag_p99_ms": "lag p99", "offered_rate": "offered", "speedup": "trace speedup", "wall_s": "s"}
    shown = {"speedup": probes["speedup"].notna().any() if "speedup" in probes else False,   # a trace's only
             "scout": (probes["scout"] == True).any() if "scout" in probes else False}   # noqa: E712 - scouts passed
    p = probes[[c for c in cols if c in probes and shown.get(c, True)]]
    p = p.rename(columns=cols)
    return _styled(p, {"rate": 2, "offered": 2, "attained": 3, "low 95%": 3, "high 95%": 3, "n_eff": 0,
                       "lag p99": 2, "s": 1, "settle": 1,
                       "trace speedup": 2})


def replay_view(summary: dict[str, Any]):
    """Each trace probe's fidelity; None without a trace."""
    if not summary.get("replay"):
        return None
    frame = pd.DataFrame([{**{k: v for k, v in r.items() if k not in ("send_lag", "arrival_bursts")},
                           "send lag p99 ms": (r.get("send_lag") or {}).get("p99_ms"),
                           "largest burst": (r.get("arrival_bursts") or {}).get("largest"),
                           "rows in bursts": (r.get("arrival_bursts") or {}).get("rows_in_bursts")}
                          for r in summary["replay"]])
    return _styled(frame, {"rate": 2, "speedup": 2, "measured_over_implied": 2, "send lag p99 ms": 2,
                           "rows in bursts": 2})


def searched(goodput_row: dict[str, Any]) -> bool:
    """A goodput row of a topology that was searched (a failed one's row carries its error; in a summary read back
    from JSON the others carry NaN there)."""
    return not isinstance(goodput_row.get("error"), str)


def missed_view(missed: pd.DataFrame, summary: dict[str, Any], limit: int = 20):
    """The missed requests of each search's SLO-scale probe (the passing probe at the goodput rate, else the lowest
    rate probed: `curve_probe`), longest prompts first; None when nothing missed there."""
    at = {(g["topology"], g["slo"]): g.get("curve_probe") for g in summary["goodput"] if searched(g)}
    keep = missed[[at.get((t, s)) == i for t, s, i in zip(missed["topology"], missed["slo"], missed["probe"])]]
    if keep.empty:
        return None
    keep = keep.sort_values("prompt_tokens", ascending=False).head(limit).dropna(axis=1, how="all")
    keep = keep.drop(columns=[c for c in ("request_id", "status") if c in keep])
    return _styled(keep.rename(columns=lambda c: c.replace("_", " ")),
                   {"rate": 2, "ttft ms": 0, "tpot ms": 1, "router ms": 1, "prefill ms": 1, "kv check ms": 1,
                    "decode first ms": 1})


def misses_view(misses: pd.DataFrame) -> list:
    """Two narrow tables: misses by cause per probe; where the time went (server means by role over the probe,
    and the router's breakdown of the missed requests). Columns with no value anywhere are left out."""
    keys = ["topology", "slo", "probe", "rate"]
    m = misses.dropna(axis=1, how="all")
    causes = m[keys + ["missed"] + sorted(c for c in m if c.startswith("missed_") and not c.startswith("missed_mean"))]
    times = m[keys + [c for c in m if c.endswith("_ms")]]
    times = times.rename(columns=lambda c: c.replace("aggregated_", "agg_").replace("missed_mean_", "missed: ")
                         .replace("_mean_", " ").replace("_ms", "").replace("_", " "))
    counts = {c.replace("missed_", "missed "): 0 for c in causes.columns if c.startswith("missed")}
    return [_styled(causes.rename(columns=lambda c: c.replace("missed_", "missed ")), {"rate": 2} | counts),
            _styled(times, {c: 1 for c in times.columns if c not in keys} | {"rate": 2})]
