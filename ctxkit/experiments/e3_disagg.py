"""E3 aggregated vs disaggregated serving, with KV-transfer accounting.

The same workload runs against (a) an aggregated pool of N replicas behind ctxkit's router and (b) P prefill +
D decode instances joined by a vLLM KV connector behind the same router (N = P + D by default: the same total
resources). Before each measurement, a greedy correctness set of several prompt lengths goes through, one request
at a time: disaggregated outputs must equal aggregated ones token for token, and the decode servers'
prompt_tokens_by_source{source="external_kv_transfer"} must grow by exactly the KV tokens the broker handed over.

With backend=topology the disaggregated arm is a deployment ctxkit attaches to (ctxkit.backends.topology): its
entry point takes the requests, its decode instances' counters are read as a pool's are, and the KV tokens they
must load come from the connector the parameters name and the decode servers' block size (cache_config_info): no
broker of ctxkit's sees its handoffs, so the per-handoff byte and broker checks are recorded as not applicable. The
aggregated arm is a second attached deployment (aggregated_topology_file) or a pool ctxkit starts here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from ctxkit import plots
from ctxkit.backends.topology import AttachedTopology
from ctxkit.collectors import kv_transfer, link
from ctxkit.collectors.gpu import GPUSampler, write_timeline
from ctxkit.collectors.latency import request_latency, slo_of
from ctxkit.collectors.server_metrics import cache_config, parse, value
from ctxkit.completions import CompletionRequest
from ctxkit.experiments.common import check, token_prompts
from ctxkit.load.engine import measure
from ctxkit.load.workloads import build_workload
from ctxkit.models import ModelCard
from ctxkit.params import E3Params, E3Variant, TopologyParams
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder
from ctxkit.schedulers.broker import cross_layer_blocks
from ctxkit.schedulers.kv_store import loaded_tokens, stored_tokens
from ctxkit.schedulers.placement import devices_used, gpu_roles
from ctxkit.schedulers.topology import build_pool

MODES = ("aggregated", "disaggregated")


@dataclass
class ModeResult:
    mode: str
    records: list[RequestRecord]
    correctness: dict[str, list[int]]
    latency: dict[str, Any]
    servers: dict[str, Any]
    describe: dict[str, Any]
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    correctness_handoffs: list[dict[str, Any]] = field(default_factory=list)
    external_kv_tokens: Optional[float] = None
    devices: int = 1
    gpu: Optional[GPUSampler] = None          # NVML telemetry of this mode's GPUs, tagged with each GPU's role
    link: Optional[dict[str, Any]] = None     # the prefill -> decode link, measured before the servers start
    block_size: Optional[int] = None          # KV block size of a disaggregated pool
    error: Optional[str] = None               # a variant that could not run: why (the sweep goes on)
    timeline: list[dict[str, Any]] = field(default_factory=list)   # its servers' gauges through the load window
    attached: bool = False                    # a deployment ctxkit attached to (backend topology), not its own pool
    expected_external_kv_tokens: Optional[int] = None   # attached: what its decode servers must load (see module)


def run_seed(params: E3Params, run: RunFolder) -> int:
    """The seed of the run's prompts. With an attached deployment, mixed with the run id: its servers outlive the
    run, and prompts they cached in an earlier run would meet their prefix caches (a decode server would load fewer
    KV tokens from its prefill server and fail the check for no fault of the KV path; TTFTs would favour the arm
    that kept its cache). Both arms of one run draw the same prompts."""
    if params.backend != "topology":
        return params.seed
    return params.seed + int.from_bytes(hashlib.sha256(run.run_id.encode()).digest()[:4], "big")


def correctness_set(params: E3Params, card: ModelCard, seed: int) -> list[CompletionRequest]:
    """Greedy prompts of correctness_prompt_lens tokens, from `seed` (run_seed)."""
    prompts = token_prompts(np.random.default_rng(seed + 31_337), params.correctness_prompt_lens,
                            card.vocab_size, card.config.get("bos_token_id"))
    return [CompletionRequest(f"correct-{i}-len{len(p)}", p, params.correctness_max_tokens) for i, p in enumerate(prompts)]


def prompts_digest(requests: list[CompletionRequest]) -> str:
    """What the correctness set sent (token ids and max_tokens), as one digest: runs whose outputs are compared
    (ctxkit packet) must have sent the same prompts."""
    sent = [[r.request_id, list(map(int, r.prompt)), r.max_tokens] for r in requests]
    return hashlib.sha256(repr(sent).encode()).hexdigest()[:16]


def is_attached(params: E3Params, mode: str) -> bool:
    """Whether this arm is a deployment ctxkit attaches to rather than a pool it starts."""
    return params.backend == "topology" and (mode == "disaggregated" or bool(params.aggregated_topology_file))


def make_pool(params: E3Params, run: RunFolder, mode: str, name: Optional[str] = None):
    if is_attached(params, mode):
        path = params.topology_file if mode == "disaggregated" else params.aggregated_topology_file
        return AttachedTopology.from_file(str(path), name=name or mode)
    if mode == "aggregated":
        replicas = params.aggregated_replicas or (
            len(AttachedTopology.from_file(str(params.topology_file)).spec.instances) if params.backend == "topology"
            else params.prefill_instances + params.decode_instances)
        spec = TopologyParams(name="aggregated", kind="aggregated", policy=params.policy, replicas=replicas)
    else:
        spec = TopologyParams(name=name or "disaggregated", kind="disaggregated", prefill=params.prefill_instances,
                              decode=params.decode_instances, connector=params.connector, policy=params.policy,
                              kv_buffer_device=params.kv_buffer_device, connector_extra=params.connector_extra,
                              prefill_visible_devices=params.prefill_visible_devices,
                              decode_visible_devices=params.decode_visible_devices)
    return build_pool(params.server, spec, seed=params.seed, log_dir=run.logs, ray=params.ray)


def _nixl(servers) -> tuple[float, float]:
    """NixlConnector's own counters on the decode servers: bytes pulled and seconds spent pulling."""
    samples = [parse(s.metrics()) for s in servers]
    return (sum(value(x, "vllm:nixl_bytes_transferred_sum") for x in samples),
            sum(value(x, "vllm:nixl_xfer_time_seconds_sum") for x in samples))


def _external_kv(servers) -> float:
    return sum(value(parse(s.metrics()), "vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
               for s in servers)


def measure_link(params: E3Params, pool, card: ModelCard, attached: bool, log=print) -> dict[str, Any]:
    """The prefill -> decode link, before the servers start (every GPU's memory free); an attached deployment's
    GPUs are not this host's to probe."""
    if attached:
        return {"available": False, "reason": "attached deployment: its prefill and decode devices are not this "
                                              "host's to probe"}
    measured = link.probe(pool.placement, card, pool.block_size,
                          stored_tokens(params.workload.input_len, pool.block_size), pool.storage,
                          cross_layers=cross_layer_blocks(params.connector_extra))
    rate = kv_transfer.link_rate(measured)
    log(f"[e3] link: {measured.get('path', measured.get('reason'))}"
        + (f": {rate:.2f} GB/s one buffer, {measured['descriptor']['gb_per_s']:.2f} GB/s in "
           f"{measured['descriptor']['piece_bytes']} B pieces" if rate else ""))
    return measured


def reported_block_size(decoders) -> Optional[int]:
    """The KV block size the decode servers report in cache_config_info; None unless all report one and the same."""
    sizes = {cache_config(parse(d.metrics())).get("block_size") for d in decoders}
    size = next(iter(sizes)) if len(sizes) == 1 else None
    return int(size) if str(size).isdigit() else None


def expected_external(connector: str, block_size: Optional[int], records: list[RequestRecord]) -> Optional[int]:
    """KV tokens an attached deployment's decode servers must load for the correctness requests that completed: by
    the connector the parameters name, at the block size they report (None without one)."""
    if block_size is None:
        return None
    return sum(loaded_tokens(connector, r.prompt_tokens, block_size)[0] for r in records if r.ok)


def describe_pool(pool) -> dict[str, Any]:
    """What a pool (ctxkit's own, or an attached deployment) records of itself, its placement included."""
    return {**pool.describe(), "placement": pool.placement}


def servers_of(describe: dict[str, Any]) -> int:
    """Its servers: those ctxkit started, or the instances an attached deployment's topology file lists."""
    return len(describe.get("servers") or describe["placement"]["servers"])


def run_mode(params: E3Params, run: RunFolder, mode: str, out: JsonlWriter, log=print,
             name: Optional[str] = None) -> ModeResult:
    """One pool (`mode`: aggregated | disaggregated) through warmup, the greedy correctness set and the load;
    `name` labels a variant's pool, records and logs (default: the mode)."""
    card = ModelCard.load(params.server.model)
    label, attached = name or mode, is_attached(params, mode)
    brokered = mode == "disaggregated" and not attached      # ctxkit's router hands the KV over and records it
    pool = make_pool(params, run, mode, label)
    measured_link = measure_link(params, pool, card, attached, log) if mode == "disaggregated" else None
    log(f"[e3] {label}: " + ("checking the attached deployment ..." if attached
                             else f"starting {len(pool.servers)} vLLM server(s) and the router ..."))
    sampler = GPUSampler(params.gpu_sample_interval_s, roles={} if attached else gpu_roles(pool.placement),
                         tags={"mode": label})
    if attached or params.ray is not None:   # its GPUs may be on other hosts: this host's NVML says nothing of them
        sampler.unavailable = ("attached deployment" if attached else "servers placed through Ray") + \
            ": ctxkit samples only GPUs of servers it starts on this host"
    with pool, sampler:
        log(f"[e3] {label}: entry point {pool.base_url}; placement: {pool.placement['reason']}")
        warm = build_workload(params.workload, card, params.server.max_model_len, run_seed(params, run) + 99_991,
                              count=max(1, servers_of(describe_pool(pool))), id_prefix=f"{label}-warmup")
        for it in warm:
            rec = pool.generate(it.prompt, it.max_tokens, request_id=it.request_id,
                                timeout_s=params.request_timeout_s)
            rec.warmup, rec.tags = True, {"mode": label, "set": "warmup"}
            out.write(rec)
        decoders = pool.by_role("decode") if mode == "disaggregated" else []
        before = _external_kv(decoders) if decoders else None
        n_handoffs = len(pool.handoffs(expect=len(warm))) if brokered else 0
        correctness: dict[str, list[int]] = {}
        corr_requests = correctness_set(params, card, run_seed(params, run))
        nixl_per_request: dict[str, tuple[float, float]] = {}
        corr_records = []
        for req in corr_requests:
            rid = f"{label}-{req.request_id}"
            nixl_before = _nixl(decoders) if decoders and params.connector == "nixl" else None
            rec = pool.generate(req.prompt, req.max_tokens, request_id=rid, timeout_s=params.request_timeout_s)
            if nixl_before is not None:   # one request at a time: the connector's own counters are this request's
                after = _nixl(decoders)
                nixl_per_request[rid] = (after[0] - nixl_before[0], after[1] - nixl_before[1])
            rec.warmup, rec.tags = True, {"mode": label, "set": "correctness"}   # never in the latency numbers
            out.write(rec)
            corr_records.append(rec)
            correctness[req.request_id] = rec.output_token_ids if rec.ok else []
            if not rec.ok:
                log(f"[e3] {label}: correctness request {req.request_id} failed: {rec.error}")
        external = _external_kv(decoders) - before if decoders else None
        correctness_handoffs = pool.handoffs(expect=n_handoffs + len(corr_requests))[n_handoffs:] \
            if brokered else []
        n_handoffs += len(correctness_handoffs)
        for h in correctness_handoffs:
            if h["request_id"] in nixl_per_request:
                nbytes, seconds = nixl_per_request[h["request_id"]]
                h["kv_bytes_measured"], h["transfer_ms"] = int(nbytes), 1000.0 * seconds
                h["extra"]["measured_by"] = "decode vllm:nixl_bytes_transferred / vllm:nixl_xfer_time_seconds"
        items = build_workload(params.workload, card, params.server.max_model_len, run_seed(params, run),
                               id_prefix=f"{label}")
        log(f"[e3] {label}: measuring {len(items)} requests ({params.load.arrival}, "
            f"concurrency {params.load.concurrency})")
        records, prof = measure(pool, items, params.load, seed=params.seed, timeout_s=params.request_timeout_s,
                                slo=slo_of(params.slo), out=out, label=f"e3 {label}", tags={"mode": label},
                                metrics_interval_s=params.metrics_interval_s)
        servers = prof["server"]
        handoffs = pool.handoffs(expect=n_handoffs + len(records))[n_handoffs:] if brokered else []
        describe = describe_pool(pool)
        block_size = reported_block_size(decoders) if attached and decoders else getattr(pool, "block_size", None)
        expected = expected_external(params.connector, block_size, corr_records) if attached and decoders else None
    enforce_error_policy(label, records, params.on_request_error)
    return ModeResult(label, records, correctness, prof["latency"], servers, describe, handoffs,
                      correctness_handoffs, external, devices=devices_used(describe["placement"]), gpu=sampler,
                      link=measured_link, block_size=block_size,
                      timeline=[{"mode": label, **row} for row in prof["timeline"]], attached=attached,
                      expected_external_kv_tokens=expected)


def variant_params(params: E3Params, v: E3Variant) -> E3Params:
    """E3's parameters with one KV path setting applied (block size, buffer device, environment, flags)."""
    extra = (["--block-size", str(v.block_size)] if v.block_size else []) + v.extra_args
    server = params.server.model_copy(update={"extra_args": params.server.extra_args + extra,
                                              "env": {**params.server.env, **v.env}})
    return params.model_copy(update={"server": server, "variants": [],
                                     "kv_buffer_device": v.kv_buffer_device or params.kv_buffer_device,
                                     "connector_extra": {**params.connector_extra, **v.connector_extra}})


def run_variants(params: E3Params, run: RunFolder, out: JsonlWriter, log=print) -> list[ModeResult]:
    """The disaggregated pool once per KV path setting, each started fresh with the same workload. A setting the
    servers refuse (e.g. a buffer device this vLLM does not support) is recorded with its error and the sweep
    goes on: one bad setting must not cost the others' measurements."""
    results = []
    for v in params.variants:
        try:
            results.append(run_mode(variant_params(params, v), run, "disaggregated", out, log, name=v.name))
        except Exception as exc:  # noqa: BLE001 - recorded in the variants table, with the servers' log named there
            log(f"[e3] {v.name}: FAILED: {type(exc).__name__}: {str(exc)[:400]}")
            results.append(ModeResult(v.name, [], {}, {}, {}, {}, error=f"{type(exc).__name__}: {str(exc)[:2000]}"))
    return results


def variant_row(params: E3Params, reference: dict[str, list[int]], res: ModeResult,
                v: Optional[E3Variant]) -> dict[str, Any]:
    """setting -> GB/s, efficiency, TTFT/TPOT, greedy outputs equal to the aggregated pool's."""
    setting = {"variant": res.mode, "block_size": res.block_size if res.block_size else (v.block_size if v else None),
               "kv_buffer_device": (v.kv_buffer_device if v and v.kv_buffer_device else params.kv_buffer_device),
               "connector_extra": ",".join(f"{k}={x}" for k, x in sorted(
                   {**params.connector_extra, **(v.connector_extra if v else {})}.items())) or None,
               "env": ",".join(f"{k}={x}" for k, x in ((v.env if v else {}) or {}).items()) or None}
    if res.error:
        return {**setting, "greedy_outputs_equal": False, "error": res.error}
    rate = kv_transfer.link_rate(res.link)
    frame = kv_transfer.handoff_frame(res.handoffs, res.records, rate)
    kv = kv_transfer.summarize(frame)
    win = window_kv(res, kv, rate)
    same = bool(reference) and all(res.correctness.get(k) == out and out for k, out in reference.items())
    return {**setting, "window_gb_per_s": win.get("gb_per_s"), "link_gb_per_s": rate,
            "descriptor_gb_per_s": (res.link or {}).get("descriptor", {}).get("gb_per_s"),
            "descriptor_bytes": (res.link or {}).get("descriptor", {}).get("piece_bytes"),
            "efficiency": win.get("efficiency"), "descriptors": win.get("descriptors"),
            "p50_ttft_ms": res.latency["ttft_ms"]["p50"], "p50_tpot_ms": res.latency["tpot_ms"]["p50"],
            "greedy_outputs_equal": same, "failed": res.latency["failed"], "error": None}


class RequestsFailed(RuntimeError):
    """Requests failed and the parameters say to stop (on_request_error: stop)."""


def enforce_error_policy(mode: str, records: list[RequestRecord], policy: str) -> None:
    """on_request_error: 'continue' keeps failures as SLO misses in the numbers; 'stop' ends the run here."""
    failed = [r for r in records if not r.ok]
    if failed and policy == "stop":
        raise RequestsFailed(f"{mode}: {len(failed)} request(s) failed and on_request_error is 'stop'; first: "
                             f"{failed[0].request_id}: {failed[0].error}")


def window_kv(dis: ModeResult, kv: dict[str, Any], link_gb_per_s: Optional[float]) -> dict[str, Any]:
    """KV moved in the measured window, by whoever counts it: NixlConnector counts its own bytes, transfer time,
    descriptors and post time on the decode servers; for ExampleConnector the router measured every handoff's files."""
    counters = [v for v in dis.servers.values()]
    nixl_bytes = sum(v.get("nixl_bytes_transferred") or 0 for v in counters)
    if nixl_bytes:
        seconds = sum(v.get("nixl_xfer_time_seconds") or 0 for v in counters)
        out: dict[str, Any] = {"measured_by": "decode servers' vllm:nixl_* counters", "bytes": nixl_bytes,
                               "transfer_s": seconds,
                               "descriptors": sum(v.get("nixl_num_descriptors") or 0 for v in counters) or None,
                               "post_s": sum(v.get("nixl_post_time_seconds") or 0 for v in counters) or None}
    elif dis.attached:   # ExampleConnector's files lie on the deployment's hosts, and no broker of ctxkit's saw them
        return {"measured_by": None, "bytes": None, "transfer_s": None, "gb_per_s": None, "efficiency": None,
                "reason": "attached deployment: no NixlConnector counters on its decode instances, and its "
                          "handoffs pass no broker of ctxkit's"}
    else:
        ms = [h.get("transfer_ms") or 0 for h in dis.handoffs if h.get("status") == "ok"]
        out = {"measured_by": "router: safetensors files per handoff, time to the decode's first token",
               "bytes": kv.get("total_kv_bytes_measured", 0), "transfer_s": sum(ms) / 1000.0}
    out["gb_per_s"] = out["bytes"] / out["transfer_s"] / 1e9 if out["bytes"] and out["transfer_s"] else None
    out["efficiency"] = out["gb_per_s"] / link_gb_per_s if out["gb_per_s"] and link_gb_per_s else None
    out["bytes_over_expected"] = out["bytes"] / kv["total_kv_bytes_expected"] \
        if kv.get("total_kv_bytes_expected") else None
    if nixl_bytes:
        out.update(step_level(out, dis))
    return out


def step_level(win: dict[str, Any], dis: ModeResult) -> dict[str, Any]:
    """What NIXL's own counters read when the polling, not the link, sets the pace. NIXL times a transfer until a
    status check sees it done, and vLLM's NixlConnector checks once per engine step (get_finished): a transfer
    shorter than a step reads as up to about a step (less when it starts partway through one). Bytes per handoff /
    the decode servers' step (their mean inter-token latency) is the rate the counters then show, however fast the
    link; a counted rate near it measures the polling. A level, not a strict bound."""
    transfers = sum(1 for h in dis.handoffs if h.get("status") == "ok")
    decodes = [v for v in dis.servers.values() if v.get("nixl_bytes_transferred") and v.get("mean_itl_ms")]
    steps = sum(v.get("itl_count") or 0 for v in decodes)
    if not transfers or not steps:
        return {}
    step_ms = sum(v["mean_itl_ms"] * (v.get("itl_count") or 0) for v in decodes) / steps
    per_transfer_ms = 1000 * win["transfer_s"] / transfers
    return {"transfers": transfers, "transfer_ms_mean": per_transfer_ms, "decode_step_ms": step_ms,
            "step_level_gb_per_s": win["bytes"] / transfers / (step_ms / 1000) / 1e9,
            "at_step_level": per_transfer_ms >= 0.5 * step_ms}


def link_table(kv: dict[str, Any]):
    """The link (one buffer, the handoff's descriptor size) beside the KV path's achieved rate in the window, as a
    Styler (no index, whole bytes, '-' where a column does not apply); where neither was measured, a sentence
    saying why (an attached deployment without NIXL counters), not an empty header."""
    rows, link_ = [], kv.get("link") or {}
    if link_.get("available"):
        for name, what in (("large", "link: one buffer"), ("descriptor", "link: descriptor-size pieces")):
            r = link_[name]
            rows.append({"what": what, "pieces": r["pieces"], "piece bytes": r["piece_bytes"],
                         "GB/s": r["gb_per_s"], "of link %": 100 * r["gb_per_s"] / link_["large"]["gb_per_s"]})
    win = kv.get("window") or {}
    if win.get("gb_per_s"):
        rows.append({"what": "KV path, load window", "pieces": win.get("descriptors"), "piece bytes": None,
                     "GB/s": win["gb_per_s"],
                     "of link %": 100 * win["efficiency"] if win.get("efficiency") is not None else None})
    if win.get("step_level_gb_per_s") and link_.get("available"):
        rows.append({"what": "polling level: bytes per handoff / decode step", "pieces": None, "piece bytes": None,
                     "GB/s": win["step_level_gb_per_s"],
                     "of link %": 100 * win["step_level_gb_per_s"] / link_["large"]["gb_per_s"]})
    if not rows:
        return f"No link or KV rate measured: {link_.get('reason') or 'no KV path in this run'}."
    frame = pd.DataFrame(rows, columns=["what", "pieces", "piece bytes", "GB/s", "of link %"])
    return frame.style.hide(axis="index").format({"pieces": "{:,.0f}", "piece bytes": "{:,.0f}", "GB/s": "{:.3f}",
                                                  "of link %": "{:.1f}"}, na_rep="-")


def breakdown(result: ModeResult) -> pd.DataFrame:
    """TTFT per request split into router, prefill, KV transfer, first decode step and the rest."""
    frame = kv_transfer.handoff_frame(result.handoffs, result.records)
    if frame.empty:
        return frame
    out = pd.DataFrame({"request_id": frame["request_id"], "client_ttft_ms": frame["client_ttft_ms"]})
    out["router_ms"] = frame["router_ms"]
    out["prefill_ms"] = frame["prefill_ms"]
    out["kv_transfer_ms"] = frame["transfer_ms"].fillna(0) + frame["kv_check_ms"].fillna(0)
    out["first_decode_step_ms"] = frame["decode_step_ms"]
    parts = out[["router_ms", "prefill_ms", "kv_transfer_ms", "first_decode_step_ms"]].sum(axis=1)
    out["other_ms"] = (out["client_ttft_ms"] - parts).clip(lower=0)
    return out


def unit_of(placement: dict[str, Any]) -> str:
    """What a placement's devices count: GPUs, CPU core sets, or what an attached deployment's file states."""
    return placement.get("unit") or ("GPU" if placement.get("kind") == "gpu" else "CPU core set")


def headline(result: ModeResult) -> dict[str, Any]:
    lat = result.latency
    return {"mode": result.mode, "servers": servers_of(result.describe), "devices": result.devices,
            "unit": unit_of(result.describe["placement"]),
            "completed": lat["completed"], "failed": lat["failed"],
            "request_throughput": lat["request_throughput"], "output_throughput": lat["output_throughput"],
            "p50_ttft_ms": lat["ttft_ms"]["p50"], "p95_ttft_ms": lat["ttft_ms"]["p95"],
            "p50_tpot_ms": lat["tpot_ms"]["p50"], "p95_tpot_ms": lat["tpot_ms"]["p95"],
            "p50_e2e_ms": lat["e2e_ms"]["p50"], "slo_attainment": lat.get("slo_attainment"),
            "request_goodput": lat.get("request_goodput"),
            "goodput_per_device": (lat.get("request_goodput") or 0) / result.devices}   # GPUs, or core sets


HEADLINE = [("mode", "mode", None), ("servers", "servers", 0), ("completed", "done", 0), ("failed", "failed", 0),
            ("request_throughput", "req/s", 2), ("output_throughput", "out tok/s", 0),
            ("p50_ttft_ms", "TTFT p50 ms", 1), ("p95_ttft_ms", "TTFT p95 ms", 1), ("p50_tpot_ms", "TPOT p50 ms", 2),
            ("p95_tpot_ms", "TPOT p95 ms", 2), ("p50_e2e_ms", "E2E p50 ms", 0), ("slo_attainment", "in SLO %", 0),
            ("devices", "devices", None), ("request_goodput", "goodput req/s", 2),
            ("goodput_per_device", "goodput/device", 2)]


def headline_table(summary: dict[str, Any]):
    """Aggregated and disaggregated side by side: short headers with units, rounded (a Styler)."""
    frame = pd.DataFrame(summary["headline"])
    cols = [(c, h, d) for c, h, d in HEADLINE if c in frame]
    frame = frame[[c for c, _, _ in cols]].rename(columns={c: h for c, h, _ in cols})
    frame["in SLO %"] = 100 * frame["in SLO %"].astype(float)
    formats: dict[str, Any] = {h: f"{{:.{d}f}}" for _, h, d in cols if d is not None}
    formats["devices"] = "{:g}"                   # an attached deployment's file may state a fraction of a GPU
    return frame.style.hide(axis="index").format(formats, na_rep="-")


NOT_CHECKED = {   # what only ctxkit's own broker sees, so an attached deployment's run does not check it
    "kv_bytes_within_2pct": "attached deployment: its handoffs pass no broker of ctxkit's, which measures each one's "
                            "bytes (ExampleConnector's files; NixlConnector's counters per request are not yet "
                            "compared for attached deployments)",
    "broker_completed_handoffs": "attached deployment: its handoffs pass no broker of ctxkit's to count them",
    "ttft_breakdown": "attached deployment: the per-request split of TTFT (router, prefill, KV transfer, first decode "
                      "step) is ctxkit's router's record; e3_ttft_breakdown.csv is not written",
}


def summarize(params: E3Params, run: RunFolder, agg: ModeResult, dis: ModeResult,
              variants: Optional[list[ModeResult]] = None) -> dict[str, Any]:
    card = ModelCard.load(params.server.model)
    variants = variants or []
    diffs = [k for k in agg.correctness if agg.correctness[k] != dis.correctness.get(k) or not agg.correctness[k]]
    link_gb_per_s = kv_transfer.link_rate(dis.link)
    handoff_frame = kv_transfer.handoff_frame(dis.handoffs, dis.records, link_gb_per_s)
    kv = kv_transfer.summarize(handoff_frame)
    kv["link"] = dis.link or {"available": False, "reason": "not measured"}
    kv["window"] = window_kv(dis, kv, link_gb_per_s)
    corr_frame = kv_transfer.handoff_frame(dis.correctness_handoffs)
    all_frame = pd.concat([corr_frame, handoff_frame], ignore_index=True)
    moved = [r for r in all_frame.to_dict("records") if r["status"] == "ok" and r["kv_tokens"]]
    within = [abs(r["bytes_ratio"] - 1) <= 0.02 for r in moved if r["bytes_ratio"] is not None]
    if dis.attached:
        expected_external = dis.expected_external_kv_tokens or 0
        handed = (f"vLLM's {params.connector} connector loads {expected_external} KV tokens for the correctness "
                  "set at the decode servers' block size (cache_config_info)" if dis.expected_external_kv_tokens
                  is not None else "the decode servers report no single block size (cache_config_info): nothing "
                                   "to expect")
    else:
        expected_external = int(corr_frame["kv_tokens"].sum()) if not corr_frame.empty else 0
        handed = f"the broker handed over {expected_external} KV tokens in the correctness set"
    total_failed = agg.latency["failed"] + dis.latency["failed"]
    checks = {
        "success": check(total_failed == 0, f"aggregated {agg.latency['completed']}/{agg.latency['requests']}, "
                                            f"disaggregated {dis.latency['completed']}/{dis.latency['requests']} "
                                            "completed"),
        "greedy_outputs_equal": check(not diffs and bool(agg.correctness),
                                      f"{len(agg.correctness) - len(diffs)}/{len(agg.correctness)} prompts of "
                                      f"{params.correctness_prompt_lens} tokens identical token for token"
                                      + (f"; differ: {diffs}" if diffs else "")),
        "kv_loaded_not_recomputed": check(
            dis.external_kv_tokens is not None and dis.external_kv_tokens == expected_external
            and expected_external > 0,
            f"decode prompt_tokens_by_source{{external_kv_transfer}} grew by {dis.external_kv_tokens}; {handed}"),
        "kv_bytes_within_2pct": check(bool(within) and all(within),
                                      f"{sum(within)}/{len(within)} handoffs with measured KV bytes within 2% of "
                                      f"expected ({card.kv_bytes_per_token()} B/token, block-aligned)"),
        "broker_completed_handoffs": check(kv["broker_completed_handoffs"] == dis.latency["completed"],
                                           f"{kv['broker_completed_handoffs']} handoffs for "
                                           f"{dis.latency['completed']} completed requests"),
    }
    not_checked = {}
    if dis.attached:     # ctxkit's broker saw no handoff of the attached deployment: nothing to compare per handoff
        for name in ("kv_bytes_within_2pct", "broker_completed_handoffs"):
            del checks[name]
        not_checked = dict(NOT_CHECKED)
    summary = {
        "experiment": "e3_disagg",
        "run_id": run.run_id,
        "checks": checks,
        "not_checked": not_checked,
        "headline": [headline(agg), headline(dis)],
        "profiling": {"latency": {"aggregated": agg.latency, "disaggregated": dis.latency},
                      "kv_transfer": kv, "server": {"aggregated": agg.servers, "disaggregated": dis.servers},
                      "gpu": {res.mode: res.gpu.stop() if res.gpu else {"available": False, "reason": "not sampled"}
                              for res in (agg, dis, *variants)}},
        "broker_completed_handoffs": kv["broker_completed_handoffs"],
        "gpu_assignment": {"aggregated": agg.describe["placement"], "disaggregated": dis.describe["placement"]},
        "correctness": {"prompt_lens": params.correctness_prompt_lens,
                        "prompts_sha256": prompts_digest(correctness_set(params, card, run_seed(params, run))),
                        "aggregated": agg.correctness,
                        "disaggregated": dis.correctness, "external_kv_tokens": dis.external_kv_tokens,
                        "expected_external_kv_tokens": expected_external, "decode_block_size": dis.block_size},
        "servers": [agg.describe, dis.describe] + [v.describe for v in variants if not v.error],
        "variants": [variant_row(params, agg.correctness, dis, None)]
        + [variant_row(params, agg.correctness, res, v) for res, v in zip(variants, params.variants)]
        if variants else [],
    }
    run.write_json("summary.json", summary)
    return summary


def write_artifacts(run: RunFolder, agg: ModeResult, dis: ModeResult, summary: dict[str, Any],
                    variants: Optional[list[ModeResult]] = None) -> list:
    pd.DataFrame(summary["headline"]).to_csv(run.artifacts / "e3_headline.csv", index=False)
    if summary.get("variants"):
        pd.DataFrame(summary["variants"]).to_csv(run.artifacts / "e3_variants.csv", index=False)
    if not dis.attached:     # an attached deployment's handoffs pass no broker of ctxkit's (summary.not_checked)
        kv_transfer.handoff_frame(dis.handoffs, dis.records, kv_transfer.link_rate(dis.link)).to_csv(
            run.artifacts / "e3_handoffs.csv", index=False)
    write_timeline([res.gpu for res in (agg, dis, *(variants or [])) if res.gpu],
                   run.artifacts / "e3_gpu_timeline.csv")
    gauges = [row for res in (agg, dis, *(variants or [])) for row in res.timeline]
    if gauges:
        pd.DataFrame(gauges).to_csv(run.artifacts / "e3_server_timeline.csv", index=False)
    br = breakdown(dis)
    if not dis.attached:
        br.to_csv(run.artifacts / "e3_ttft_breakdown.csv", index=False)
    req = []
    for res in (agg, dis):
        for r in res.records:
            lat = request_latency(r)
            req.append({"mode": res.mode, "request_id": r.request_id, "status": r.status, "ttft_ms": lat.ttft_ms,
                        "tpot_ms": lat.tpot_ms, "e2e_ms": lat.e2e_ms, "route": r.route})
    frame = pd.DataFrame(req)
    frame.to_csv(run.artifacts / "e3_requests.csv", index=False)
    figs = [plots.distributions(frame, "mode", ["ttft_ms", "tpot_ms", "e2e_ms"], run.artifacts / "e3_latency_cdf.svg",
                                "E3: latency distributions")]
    if not br.empty:
        figs.append(plots.stacked_breakdown(br, ["router_ms", "prefill_ms", "kv_transfer_ms", "first_decode_step_ms",
                                                 "other_ms"], run.artifacts / "e3_ttft_breakdown.svg",
                                            "E3: TTFT breakdown per disaggregated request"))
    figs += [f for f in (mode_timeline(res, run) for res in (agg, dis)) if f is not None]
    return figs


def mode_timeline(res: ModeResult, run: RunFolder):
    """One mode's servers through its load window: their gauges beside the client's requests in flight, with NVML's
    view of its GPUs where sampled (e3_server_timeline_<mode>.svg); None without scrapes."""
    requests = pd.DataFrame([{"mode": res.mode, "t_send_ns": r.t_send_ns, "t_end_ns": r.t_end_ns}
                             for r in res.records if r.t_send_ns])
    if not res.timeline or requests.empty:
        return None
    gpu = pd.DataFrame(res.gpu.rows) if res.gpu is not None and res.gpu.rows else None
    return plots.server_timeline(pd.DataFrame(res.timeline), requests,
                                 run.artifacts / f"e3_server_timeline_{res.mode}.svg", gpu=gpu, span="mode")


def conclusions(summary: dict[str, Any]) -> str:
    a, d = summary["headline"]
    kv = summary["profiling"]["kv_transfer"]
    unit = d.get("unit") or unit_of(summary["gpu_assignment"]["disaggregated"])   # runs before "unit" was kept

    def pct(x: float, y: float) -> str:
        return f"{100 * (x - y) / y:+.0f}%" if y else "n/a"
    text = (f"Disaggregated serving changed median TTFT by {pct(d['p50_ttft_ms'], a['p50_ttft_ms'])} "
            f"({a['p50_ttft_ms']:.1f} -> {d['p50_ttft_ms']:.1f} ms) and median TPOT by "
            f"{pct(d['p50_tpot_ms'], a['p50_tpot_ms'])} ({a['p50_tpot_ms']:.2f} -> {d['p50_tpot_ms']:.2f} ms) against "
            f"an aggregated pool of {a['servers']} replica{'' if a['servers'] == 1 else 's'}. "
            f"Goodput per device ({unit}): aggregated "
            f"{a['goodput_per_device']:.3f} req/s on {a['devices']:g}, disaggregated {d['goodput_per_device']:.3f} "
            f"req/s on {d['devices']:g}. ")
    if a.get("unit", unit) != unit:
        text += (f"The aggregated arm's devices are {a['unit']}s, not {unit}s: its per-device goodput does not "
                 "compare with the disaggregated arm's. ")
    win = kv.get("window") or {}
    if not kv.get("broker_completed_handoffs") and win.get("gb_per_s"):     # an attached deployment's counters
        text += (f"The decode instances' NixlConnector counters show {win['bytes'] / 1e6:.1f} MB of KV moved at "
                 f"{win['gb_per_s']:.2f} GB/s over the window. ")
    if kv.get("broker_completed_handoffs"):
        text += (f"{kv['broker_completed_handoffs']} KV handoffs moved {(win.get('bytes') or 0) / 1e6:.1f} MB "
                 f"through {kv['connector']} at {win.get('gb_per_s') or 0:.2f} GB/s over the window "
                 f"({win.get('measured_by', 'n/a')}); KV waiting was a median "
                 f"{100 * (kv['stall_ratio']['p50'] or 0):.0f}% of TTFT.")
        if win.get("at_step_level"):
            text += (f" Each transfer took {win['transfer_ms_mean']:.1f} ms by NIXL's count against the decode "
                     f"servers' {win['decode_step_ms']:.1f} ms step: vLLM checks transfers once a step, so these "
                     f"counters read about {win['step_level_gb_per_s']:.2f} GB/s (bytes per handoff per step) "
                     f"however fast the link; the GB/s above measures the polling.")
        rate = kv_transfer.link_rate(kv.get("link"))
        if rate and win.get("efficiency") is not None:
            text += (f" The link itself ({kv['link']['path']}) moved {rate:.2f} GB/s as one buffer and "
                     f"{kv['link']['descriptor']['gb_per_s']:.2f} GB/s in the handoff's "
                     f"{kv['link']['descriptor']['piece_bytes']:,} B pieces: the KV path ran at "
                     f"{100 * win['efficiency']:.1f}% of the link.")
    rows = [r for r in summary.get("variants", []) if r.get("window_gb_per_s")]
    if rows:
        best = max(rows, key=lambda r: r["window_gb_per_s"])
        text += (f" Of {len(rows)} KV path settings, {best['variant']} moved KV fastest: "
                 f"{best['window_gb_per_s']:.2f} GB/s"
                 + (f" ({100 * best['efficiency']:.1f}% of the link)" if best.get("efficiency") else "")
                 + f", p50 TTFT {best['p50_ttft_ms']:.1f} ms, greedy outputs "
                 + ("equal to the aggregated pool's." if best["greedy_outputs_equal"] else "DIFFERENT from the "
                    "aggregated pool's."))
    broken = [r for r in summary.get("variants", []) if r.get("error")]
    if broken:
        text += " Settings that did not run: " + "; ".join(f"{r['variant']} ({r['error'][:160]})" for r in broken) + "."
    failed = [k for k, c in summary["checks"].items() if not c["passed"]]
    text += " All checks passed." if not failed else f" Checks FAILED: {', '.join(failed)}."
    return text
