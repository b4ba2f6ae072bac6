"""A results packet: run folders copied into one folder, with a README whose tables are written from the runs'
summaries and metadata, so that every number in it traces to a run at a recorded commit.

    ctxkit packet RUN_DIR [RUN_DIR ...] --out docs/results/<date>-<gpu>/ [--title T] [--allow-no-commit]

Per run: summary.json, run_metadata.json, params.yaml, status.json, RUN_ID, report.html and artifacts/*.csv|svg are copied
into <out>/<experiment>/ (<experiment>-2, ... for further runs of one experiment); requests.jsonl, logs and notebooks
are left out to keep the packet small (they stay in the run folder). The report and any artifact over COMPRESS_BYTES
are kept gzipped (compact): a report with its figures inline is most of a packet's bytes, and a repository that
carries every packet should stay small. The README is regenerated whole on every call,
except the text between the NOTES markers, which is kept: hand-written prose goes there, and nowhere else.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import yaml

from ctxkit.runs import peer_table, placements
from ctxkit.runs.folder import stored
from ctxkit.runs.markdown import table

NOTES_BEGIN = "<!-- ctxkit packet: notes (kept when the packet is regenerated) -->"
NOTES_END = "<!-- ctxkit packet: end of notes -->"
COPIED = ("summary.json", "run_metadata.json", "params.yaml", "status.json", "RUN_ID", "report.html")
MAX_FILE_BYTES = 4 * 2**20          # per file: larger ones stay in the run folder, and the README says so
COMPRESS_BYTES = 256 * 2**10        # artifacts larger than this are kept gzipped; the report always is
ESSENTIAL = ("summary.json", "run_metadata.json", "params.yaml")   # the README's tables: never compressed, always in

Fmt = Optional[Callable[[Any], str]]


class PacketError(ValueError):
    """A run that cannot go into a packet (not a run folder, not finished, no recorded commit)."""


@dataclass
class PacketRun:
    src: Path
    name: str                                    # folder inside the packet
    summary: dict[str, Any]
    meta: dict[str, Any]
    status: str
    left_out: list[str] = field(default_factory=list)     # files over the size cap, kept in the run folder only

    @property
    def experiment(self) -> str:
        return str(self.meta.get("experiment") or self.summary.get("experiment", "?"))

    @property
    def gpus(self) -> list[dict[str, Any]]:
        """The GPUs the run's metadata names (NVML's devices)."""
        return ((self.meta.get("hardware") or {}).get("gpus") or {}).get("devices") or []

    @property
    def commit(self) -> str:
        git = self.meta.get("git") or {}
        if not git.get("commit"):
            return "none"
        return str(git["commit"])[:12] + ("+dirty" if git.get("dirty") else "")


def num(digits: int, pct: bool = False) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        return f"{100 * v:,.{digits}f}%" if pct else f"{v:,.{digits}f}"
    return fmt


# experiment -> (where the rows are in summary.json, [(header, key, format)])
HEADLINES: dict[str, tuple[str, list[tuple[str, str, Fmt]]]] = {
    "e1_latency": ("sweep", [("prompt tokens", "prompt_len", num(0)), ("p50 TTFT ms", "p50_ttft_ms", num(1)),
                             ("TTFT / floor", "ttft_over_floor", num(2)), ("p50 TPOT ms", "p50_tpot_ms", num(2)),
                             ("TPOT / floor", "tpot_over_floor", num(2))]),
    "e2_concurrency": ("sweep", [("point", "point", None), ("req/s", "request_throughput", num(2)),
                                 ("out tok/s", "output_throughput", num(0)), ("p50 TTFT ms", "p50_ttft_ms", num(1)),
                                 ("p99 TTFT ms", "p99_ttft_ms", num(1)), ("p50 TPOT ms", "p50_tpot_ms", num(2)),
                                 ("in SLO", "slo_attainment", num(0, pct=True)),
                                 ("goodput req/s", "request_goodput", num(2))]),
    "e3_disagg": ("headline", [("mode", "mode", None), ("servers", "servers", num(0)), ("devices", "devices", num(0)),
                               ("req/s", "request_throughput", num(2)), ("p50 TTFT ms", "p50_ttft_ms", num(1)),
                               ("p50 TPOT ms", "p50_tpot_ms", num(2)), ("in SLO", "slo_attainment", num(0, pct=True)),
                               ("goodput per device", "goodput_per_device", num(3))]),
    "e4_goodput": ("goodput", [("topology", "topology", None), ("SLO", "slo", None), ("devices", "devices", num(0)),
                               ("goodput req/s", "goodput", num(2)), ("per device", "goodput_per_device", num(2)),
                               ("per device 90% CI low", "per_device_interval_low", num(2)),
                               ("per device 90% CI high", "per_device_interval_high", num(2)),
                               ("bracket low (resolution)", "per_device_low", num(2)),
                               ("bracket high", "per_device_high", num(2)),
                               ("ends measured again", "repeat", None),
                               ("search stopped", "stopped_because", None)]),
    "e5_context": ("capacity", [("context", "context_len", num(0)), ("tokens a request", "tokens_per_request", num(0)),
                                ("analytical", "analytical", num(2)), ("vLLM log", "vllm_log", num(2)),
                                ("cache config", "cache_config", num(0)), ("measured", "measured", num(0)),
                                ("measured / analytical", "measured_over_analytical", num(2))]),
}


def load_run(path: Path, allow_no_commit: bool) -> PacketRun:
    path = Path(path)
    for name in ("summary.json", "run_metadata.json"):
        if not (path / name).is_file():
            raise PacketError(f"{path}: no {name}: not a finished ctxkit run folder")
    status = json.loads((path / "status.json").read_text()).get("status", "?") \
        if (path / "status.json").is_file() else in_packet(path)
    if status != "succeeded":
        raise PacketError(f"{path}: status {status!r}: only succeeded runs go into a packet")
    run = PacketRun(path, "", json.loads((path / "summary.json").read_text()),
                    json.loads((path / "run_metadata.json").read_text()), status)
    if run.commit == "none" and not allow_no_commit:
        raise PacketError(f"{path}: the run recorded no commit ({(run.meta.get('git') or {}).get('source')}); "
                          "set CTXKIT_GIT_COMMIT where the code travels without .git, or pass --allow-no-commit")
    return run


def in_packet(path: Path) -> str:
    """A run copied into a packet before packets kept status.json: the packet took it only if it had succeeded, so
    its copy can go into another packet (e.g. beside the later runs it is compared with). Only a copy the packet's
    README lists (its run id in the Runs table) counts; a stray folder there does not."""
    readme = path.parent / "README.md"
    if not readme.is_file() or NOTES_BEGIN not in readme.read_text():
        return "?"
    run_id = json.loads((path / "run_metadata.json").read_text()).get("run_id")
    listed = bool(run_id) and f"| {run_id} |" in readme.read_text().split("## Headline numbers", 1)[0]
    return "succeeded" if listed else "?"


def headline(run: PacketRun) -> list[str]:
    spec = HEADLINES.get(run.experiment)
    if not spec or not isinstance(run.summary.get(spec[0]), list):
        return []
    cols = spec[1]
    rows = [[(fmt or str)(row.get(key)) if row.get(key) is not None else "-" for _, key, fmt in cols]
            for row in run.summary[spec[0]]]
    head = table([h for h, _, _ in cols], rows) + [""] if rows else []     # e.g. E5 with part capacity off
    return [f"### {report_link(run)} ({run.name})", ""] + head + extra(run)


def extra(run: PacketRun) -> list[str]:
    """Per experiment, what its headline table leaves out: E3's KV path against the link, E4's comparison."""
    if run.experiment == "e3_disagg":
        kv = run.summary.get("profiling", {}).get("kv_transfer", {})
        link, win = kv.get("link") or {}, kv.get("window") or {}
        rows = []
        if link.get("available"):
            for name in ("large", "descriptor"):
                r = link[name]
                rows.append([f"link, {r['pieces']:,} x {r['piece_bytes']:,} B", num(2)(r["gb_per_s"]), "-"])
        if win.get("measured_by"):          # an attached deployment without NIXL counters measured none
            rows.append([f"KV path ({win.get('measured_by')})", num(2)(win.get("gb_per_s")),
                         num(1, pct=True)(win.get("efficiency"))])
        if win.get("step_level_gb_per_s"):
            rows.append([f"polling level: bytes per handoff / decode step ({num(1)(win['decode_step_ms'])} ms; "
                         f"NIXL's {num(1)(win['transfer_ms_mean'])} ms a transfer)",
                         num(2)(win["step_level_gb_per_s"]), "-"])
        return pool_settings(run) + ((table(["KV", "GB/s", "of link"], rows) + [""]) if rows else []) + \
            variants(run)
    if run.experiment == "e4_goodput":
        # a summary from before intervals compared brackets (the searches' resolution): not shown as intervals
        intervals = all("per_device_interval_low" in g for g in run.summary.get("goodput") or [{}])
        rows = [[c["slo"], c["winner"] if c.get("runner_up") else "- (one topology measured)", num(2)(c.get("ratio")), num(2)(c.get("disaggregated_over_aggregated")),
                 str(c.get("intervals_separate", "-")) if intervals else "- (bracket only)"]
                for c in run.summary.get("comparison", [])]
        return table(["SLO", "winner", "ratio to runner-up", "disaggregated / aggregated", "90% intervals separate"],
                     rows) + [""] + probes_table(run.summary.get("probes") or []) + missed_table(run)
    if run.experiment == "e2_concurrency" and run.summary.get("replay"):
        return replay_table(run.summary["replay"])
    if run.experiment == "e5_context":
        return (cost_tables(run.summary["cost"]) if run.summary.get("cost") else []) + \
            (prefix_table(run.summary["prefix"]) if run.summary.get("prefix") else []) + \
            (chunked_table(run.summary["chunked"]) if run.summary.get("chunked") else []) + \
            (trace_tables(run.summary["trace"]) if run.summary.get("trace") else [])
    return []


def causes(probe: dict[str, Any]) -> str:
    """A probe's misses by cause (its missed_<cause> columns: ttft, tpot, ttft+tpot, e2e, failed), e.g. 'ttft 3'."""
    counts = {k[len("missed_"):]: v for k, v in probe.items() if k.startswith("missed_")}
    return ", ".join(f"{cause} {int(n)}" for cause, n in counts.items() if n and not pd.isna(n)) or "-"


def probes_table(probes: list[dict[str, Any]]) -> list[str]:
    """E4's probes, in the order the searches made them: what each rate's verdict rests on, and what each search
    cost (its probes' wall time and requests; scouts: probes before the bracket formed whose verdict is a scout's)."""
    rows = [[p["topology"], p["slo"], num(3)(p["rate"]), f"{p['met']}/{p['decided']}", num(1, pct=True)(p["attainment"]),
             f"{num(1, pct=True)(p['wilson_low'])}-{num(1, pct=True)(p['wilson_high'])}",
             p["verdict"] + (" (scout)" if p.get("scout") is True else ""), p["decided_by"], causes(p),
             num(0)(p.get("send_lag_p99_ms")), num(1)(p.get("wall_s"))] for p in probes]
    if not rows:
        return []
    cost, frame = [], pd.DataFrame(probes)
    searches = frame.groupby(["topology", "slo"], sort=False) if {"sent", "wall_s"} <= set(frame) else []
    for (topology, slo), ps in searches:                    # none in a summary written before probes kept them
        scouts = int((ps["scout"] == True).sum()) if "scout" in ps else 0  # noqa: E712 - NaN in runs before scouts
        cost.append(f"- search cost, {topology} / {slo}: {len(ps)} probes ({scouts} scouts), "
                    f"{int(ps['sent'].sum()):,} scored requests, {ps['wall_s'].sum():.1f} s of probes")
    return table(["topology", "SLO", "rate req/s", "met", "attainment", "95% interval", "verdict", "decided by",
                  "missed by cause", "send lag p99 ms", "s"], rows) + [""] + cost + [""]


def missed_table(run: PacketRun, limit: int = 12) -> list[str]:
    """E4's missed requests in each search's SLO-scale probe (summary goodput `curve_probe`: the passing probe at the
    goodput rate, else the lowest rate probed), longest prompts first, from the run's e4_missed_requests.csv (runs
    before it was written have none)."""
    path = stored(run.src / "artifacts" / "e4_missed_requests.csv")
    if not path or (missed := pd.read_csv(path)).empty:
        return []
    at = {(g["topology"], g["slo"]): g.get("curve_probe") for g in run.summary.get("goodput") or []
          if not isinstance(g.get("error"), str)}
    here = missed[[at.get((t, s)) == i for t, s, i in zip(missed["topology"], missed["slo"], missed["probe"])]]
    rows = [[m["topology"], m["slo"], num(3)(m["rate"]), str(m["missed"]), num(0)(m["prompt_tokens"]),
             num(0)(m["output_tokens"]), num(0)(m["ttft_ms"]), num(1)(m["tpot_ms"]),
             num(0)(m["others_prefill_tokens_during_ttft"]), num(0)(m["others_prefill_tokens_during_decode"])]
            for _, m in here.sort_values("prompt_tokens", ascending=False).head(limit).iterrows()]
    if not rows:
        return []
    return table(["topology", "SLO", "rate req/s", "missed", "prompt tokens", "output tokens", "TTFT ms", "TPOT ms",
                  "others' prefill tokens during its TTFT", "... during its decode"], rows) + [""]


def trace_tables(trace: dict[str, Any]) -> list[str]:
    """E5's trace part: what the server did under the trace, then how faithfully it was replayed."""
    row = [f"{num(0)(trace['requests'])} ({trace['failed']})", f"{num(2)(trace['speedup'])}x",
           f"{num(0)(trace['prompt_tokens'])} ({num(0)(trace['longest_prompt'])})",
           f"{num(0)(trace.get('p50_ttft_ms'))} / {num(0)(trace.get('p99_ttft_ms'))}",
           f"{num(1)(trace.get('p50_tpot_ms'))} / {num(1)(trace.get('p99_tpot_ms'))}",
           f"{num(0)(trace.get('peak_running'))} / {num(0)(trace.get('peak_waiting'))}",
           num(1, pct=True)(trace.get("peak_kv_usage")), num(0)(trace.get("preemptions"))]
    return table(["trace requests (failed)", "speed", "prompt tokens (longest)", "TTFT p50 / p99 ms",
                  "TPOT p50 / p99 ms", "peak running / waiting", "peak KV used", "preemptions"], [row]) + [""] + \
        replay_table({"trace": trace["fidelity"]})


def replay_table(replay: dict[str, Any]) -> list[str]:
    """E2's trace points: how faithfully the trace was replayed (lengths, prefix reuse, send times)."""
    rows = [[point, num(0)(r.get("requests")), str(r.get("lengths_exact")), num(0)(r.get("implied_reusable_tokens")),
             num(0)(r.get("measured_prefix_hits")), num(2)(r.get("measured_over_implied")),
             " / ".join(num(2)((r.get("send_lag") or {}).get(k)) for k in ("p50_ms", "p99_ms", "max_ms"))]
            for point, r in replay.items()]
    return table(["trace point", "requests", "lengths exact", "reusable tokens the trace implies",
                  "server's prefix hits", "hits / implied", "send lag p50 / p99 / max ms"], rows) + [""]


def chunked_table(chunked: list[dict[str, Any]]) -> list[str]:
    """E5's chunked prefill: per setting, the running decodes' usual gap, the largest gap while each long prefill
    ran, and the prefills' own times."""
    rows = [[r["setting"], r.get("flags") or "defaults", num(1)(r.get("baseline_itl_ms")),
             " / ".join(num(1)(x) for x in r.get("spikes_ms") or []) or "-", num(1)(r.get("spike_over_baseline")),
             " / ".join(num(0)(x) for x in r.get("prefill_ms") or []) or "-", num(1)(r.get("arrival_lag_max_ms"))]
            for r in chunked]
    return table(["setting", "server flags", "decode gap p50 ms", "largest gap in each prefill's window ms",
                  "mean of those / p50", "long prefills' TTFT ms", "worst arrival lag ms"], rows) + [""]


def prefix_table(prefix: dict[str, Any]) -> list[str]:
    """E5's prefix reuse: per shared ratio and cache arm, p50 TTFT and the measured hit rate against the implied."""
    rows = [[num(2)(r["prefix_ratio"]), r["cache"], num(1)(r.get("p50_ttft_ms")), num(3)(r.get("hit_rate")),
             num(3)(r.get("implied_hit_rate"))] for r in prefix["rows"]]
    return table(["shared ratio", "cache", "p50 TTFT ms", "measured hit rate", "implied hit rate"], rows) + [""]


def cost_tables(cost: dict[str, Any]) -> list[str]:
    """E5's cost of context: p50 TTFT and TPOT per length and batch, and the two fits."""
    rows = [[num(0)(r["context_len"]), num(0)(r["batch"]), num(1)(r.get("p50_ttft_ms")), num(2)(r.get("p50_tpot_ms")),
             num(2)(r.get("p50_tpot_steady_ms")) if r.get("p50_tpot_steady_ms") is not None else "-",
             num(2)(r.get("steady_running")) if r.get("steady_running") is not None else "-",
             num(0)(r["kv_bytes_per_step"])] for r in cost["rows"]]
    out = table(["context", "batch", "p50 TTFT ms", "p50 TPOT ms", "steady TPOT ms", "decoding in the steady window",
                 "KV bytes a step reads (whole batch)"], rows) + [""]
    f = cost.get("fit") or {}
    fits = []
    if f.get("ttft"):
        t = f["ttft"]
        fits.append(["TTFT at batch 1 = a + bL + cL^2", f"a {t['a_ms']:.2f} ms, b {t['b_ms_per_token']:.3e} ms/token, "
                     f"c {t['c_ms_per_token2']:.3e} ms/token^2", num(3)(t["r2"]),
                     f"L^2 term {num(0, pct=True)(t['quadratic_share_at_longest'])} at {t['longest']:,} tokens"])
    if f.get("tpot"):
        t = f["tpot"]
        fits.append(["TPOT = d + e x KV bytes a step reads", f"d {t['d_ms']:.2f} ms, e {t['e_ms_per_gb']:.2f} ms/GB",
                     num(3)(t["r2"]), f"KV read {num(1)(t['kv_read_gb_per_s'])} GB/s"])
    return out + ((table(["fit", "terms", "R^2", "reading"], fits) + [""]) if fits else [])


def pool_settings(run: PacketRun) -> list[str]:
    """The settings of E3's disaggregated pool, from the run's resolved params.yaml: the rows above are read with
    them (a KV path through host memory and one GPU to GPU give different tables under the same headers)."""
    p = read_params(run)
    if not p:
        return []
    server = p.get("server") or {}
    if p.get("backend") == "topology":        # a deployment ctxkit attached to: its file says what it is
        return [f"Disaggregated arm: the attached deployment of {p.get('topology_file')} (connector "
                f"{p.get('connector', '?')}, as the parameters state).", ""]
    parts = [f"connector {p.get('connector', '?')}", f"KV buffer {p.get('kv_buffer_device', '?')}",
             f"{p.get('prefill_instances', '?')}P{p.get('decode_instances', '?')}D"]
    parts += [f"connector options {p['connector_extra']}"] if p.get("connector_extra") else []
    parts += ["every pool placed through Ray"] if p.get("ray") is not None else []
    parts += [f"server args {' '.join(map(str, server['extra_args']))}"] if server.get("extra_args") else []
    parts += [f"env {server['env']}"] if server.get("env") else []
    return [f"Disaggregated pool: {', '.join(parts)}.", ""]


VARIANT_COLUMNS: list[tuple[str, str, Fmt]] = [
    ("setting", "variant", None), ("block", "block_size", num(0)), ("buffer", "kv_buffer_device", None),
    ("connector options", "connector_extra", None), ("env", "env", None), ("KV GB/s", "window_gb_per_s", num(2)),
    ("of link", "efficiency", num(1, pct=True)), ("descriptors", "descriptors", num(0)),
    ("link GB/s in descriptor pieces", "descriptor_gb_per_s", num(2)), ("p50 TTFT ms", "p50_ttft_ms", num(1)),
    ("p50 TPOT ms", "p50_tpot_ms", num(2)), ("greedy equal", "greedy_outputs_equal", None),
    ("error", "error", lambda e: _cell(str(e)))]


def _cell(text: str, head: int = 120, tail: int = 200) -> str:
    """A long message as one table cell: its start (what failed) and its end (a log's last line: why)."""
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= head + tail else f"{text[:head]} ... {text[-tail:]}"


def variants(run: PacketRun) -> list[str]:
    """E3's KV path settings, one row each (summary.variants), when the run swept them."""
    rows = run.summary.get("variants") or []
    if not rows:
        return []
    cells = [[(fmt or str)(r[key]) if r.get(key) is not None else "-" for _, key, fmt in VARIANT_COLUMNS]
             for r in rows]
    return ["KV path settings (each a disaggregated pool of its own, same workload):", ""] + \
        table([h for h, _, _ in VARIANT_COLUMNS], cells) + [""]


def machine(run: PacketRun) -> str:
    hw, v, gpus = run.meta.get("hardware") or {}, run.meta.get("versions") or {}, run.gpus
    names = ", ".join(sorted({d["name"] for d in gpus})) if gpus else "no GPU"
    return (f"{len(gpus)} x {names}" if gpus else names) + f"; {hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} " \
        f"cores, {hw.get('memory_gib', '?')} GiB); vLLM {v.get('vllm', '?')}, torch {v.get('torch', '?')}, " \
        f"Python {v.get('python', '?')}, ctxkit {v.get('ctxkit', '?')}"


def report_link(run: PacketRun) -> str:
    """The experiment's name, linked to its report when the packet holds it (not when left out for size)."""
    if any(f.startswith("report.html") for f in run.left_out):
        return run.experiment
    return f"[{run.experiment}]({run.name}/report.html.gz)"


def placements_across(runs: list[PacketRun]) -> list[str]:
    """With two or more E4 runs (a four-GPU search run in halves), their topologies side by side where the runs'
    parameters agree on model, SLO, workload and target (ctxkit.runs.placements)."""
    e4 = [r for r in runs if r.experiment == "e4_goodput"]
    if len(e4) < 2:
        return []
    found = placements.groups([(r.name, r.commit, r.summary, read_params(r)) for r in e4])
    lines = ["### E4 placements across runs", ""]
    for key, rows in found.items():
        rows = sorted(rows, key=lambda x: -(x.goodput.get("goodput_per_device") or 0))
        cells = [[x.goodput["topology"], num(0)(x.goodput.get("devices")), num(2)(x.goodput.get("goodput")),
                  num(2)(x.goodput.get("goodput_per_device")),
                  placements.interval(x.goodput), x.run, x.commit] for x in rows]
        lines += [placements.describe(key) + ":", ""] + table(
            ["topology", "GPUs", "goodput req/s", "per GPU", "per GPU 90% interval (or bracket)", "run", "commit"],
            cells) + [""]
        lines += [placements.verdict(rows), ""] if len(rows) > 1 else []
    return lines


def _digest(outputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:12]


def _prompts_key(run: PacketRun) -> tuple[Any, ...]:
    """What decides a run's correctness prompts: their digest where the run recorded one (E3 writes it), else the
    parameters they are drawn from (an attached deployment mixes the run id into the seed: never comparable)."""
    p, c = read_params(run), run.summary["correctness"]
    model = (p.get("server") or {}).get("model")
    if c.get("prompts_sha256"):
        return model, c["prompts_sha256"]
    if p.get("backend") == "topology":
        return model, run.name
    return model, tuple(c.get("prompt_lens") or []), p.get("seed"), p.get("correctness_max_tokens")


def outputs_across(runs: list[PacketRun]) -> list[str]:
    """With two or more E3 runs, each one's greedy outputs on its correctness prompts (summary.correctness), one
    digest per mode, against the first run that sent the same prompts to the same model: runs placed differently
    (locally, through Ray) agree token for token or they do not. A run with an empty output (a failed request) is
    "failed", never equal; a run alone with its prompts has nothing to be compared with ("-")."""
    e3 = [r for r in runs if r.experiment == "e3_disagg" and (r.summary.get("correctness") or {}).get("aggregated")]
    if len(e3) < 2:
        return []
    keys = {r.name: _prompts_key(r) for r in e3}          # each run's params.yaml read once
    first: dict[tuple[Any, ...], PacketRun] = {}
    rows = []
    for r in e3:
        c, key = r.summary["correctness"], keys[r.name]
        outs = (c["aggregated"], c.get("disaggregated"))
        failed = not outs[1] or not all(outs[0].values()) or not all(outs[1].values())
        ref = first.get(key, r) if failed else first.setdefault(key, r)      # the first that did not fail
        ref_outs = (ref.summary["correctness"]["aggregated"], ref.summary["correctness"].get("disaggregated"))
        same = "failed" if failed else "-" if list(keys.values()).count(key) < 2 else \
            "yes" if outs == ref_outs else "no"
        rows.append([r.name, "Ray" if read_params(r).get("ray") is not None else "local", str(key[0]),
                     ", ".join(map(str, c.get("prompt_lens") or [])), _digest(outs[0]),
                     _digest(outs[1]) if outs[1] else "-", ref.name, same])
    return ["### E3 greedy outputs across runs", ""] + table(
        ["run", "placed", "model", "prompt tokens", "aggregated outputs (sha256)", "disaggregated outputs (sha256)",
         "compared with", "equal"], rows) + [""]


def read_params(run: PacketRun) -> dict[str, Any]:
    path = run.src / "params.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def readme(title: str, runs: list[PacketRun], notes: str, peers: Sequence[peer_table.PeerRow] = ()) -> str:
    lines = [f"# {title}", "", "Written by `ctxkit packet` from the runs below: every table is their summary.json and "
             "run_metadata.json; regenerate it with the same command. Hand-written notes go between the markers at "
             "the end, which the tool keeps. Reports, and artifacts over 256 KiB, are kept gzipped (`gunzip -k FILE`; pandas "
             "reads a .csv.gz as it is).", "", "## Runs", ""]
    rows = []
    for r in runs:
        checks = r.summary.get("checks") or {}
        passed = sum(1 for c in checks.values() if c.get("passed"))
        rows.append([report_link(r), r.meta.get("run_id", "?"), r.commit,
                     f"{passed}/{len(checks)}", r.meta.get("backend_mode") or r.meta.get("backend", "?"),
                     machine(r)])
    lines += table(["experiment", "run", "commit", "checks", "backend", "machine and versions"], rows)
    big = [f"{r.name}/{f}" for r in runs for f in r.left_out]
    if big:
        lines += ["", f"Left out for size (over {MAX_FILE_BYTES / 2**20:g} MiB a file; in the run folders only): "
                  + ", ".join(big) + "."]
    lines += ["", "## Headline numbers", ""]
    for r in runs:
        lines += headline(r)
    lines += placements_across(runs) + outputs_across(runs) + peer_table.lines(list(peers))
    lines += ["## Notes", "", NOTES_BEGIN] + ([notes.strip("\n")] if notes.strip() else []) + [NOTES_END, ""]
    return "\n".join(lines)


def kept_notes(path: Path) -> str:
    if not path.is_file():
        return ""
    text = path.read_text()
    if NOTES_BEGIN in text and NOTES_END in text:
        return text.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0]
    return ""


def copy_run(run: PacketRun, dest: Path) -> None:
    """Copy what a packet keeps of a run, compacted (compact); a file still over MAX_FILE_BYTES stays in the run
    folder and is named in run.left_out (a figure of every decode gap can be megabytes: the repository is not the
    place for it). The summary, metadata and parameters always go in: the README's tables are read from them."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "artifacts").mkdir(parents=True)
    files = [f for f in (stored(run.src / n) for n in COPIED) if f] + \
        [f for f in sorted((run.src / "artifacts").glob("*")) if f.name.endswith((".csv", ".svg", ".csv.gz", ".svg.gz"))]
    for f in files:
        shutil.copy2(f, dest / f.relative_to(run.src))
    for f in compact(dest):
        if f.stat().st_size > MAX_FILE_BYTES and f.name not in ESSENTIAL:
            run.left_out.append(f"{f.relative_to(dest)} ({f.stat().st_size / 2**20:.1f} MiB)")
            f.unlink()


def compact(folder: Path) -> list[Path]:
    """Gzip a packet's copy of a run in place: its report.html, and every other file over COMPRESS_BYTES but the
    ESSENTIAL ones (stored() finds either form; pandas reads .csv.gz as it is). Deterministic bytes (no name or time
    in the gzip header), so a packet regenerated from the same runs is the same. Returns every file, as now named."""
    out = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        if f.suffix != ".gz" and f.name not in ESSENTIAL and (f.name == "report.html" or
                                                              f.stat().st_size > COMPRESS_BYTES):
            packed = f.with_name(f.name + ".gz")
            with open(f, "rb") as src, open(packed, "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                shutil.copyfileobj(src, gz)
            f.unlink()
            f = packed
        out.append(f)
    return out


def peer_rows(runs: list[PacketRun], out: Path, aiconfigurator: Optional[str]) -> list[peer_table.PeerRow]:
    """With the peer's executable: its prediction for every E4 answer, kept in the packet; without: the kept ones."""
    e4 = [r for r in runs if r.experiment == "e4_goodput"]
    if not aiconfigurator:
        return peer_table.current(peer_table.kept(out) or [], [(r.name, r.summary) for r in e4])
    return peer_table.predict_rows([(r.name, r.summary, read_params(r), r.gpus[0]["name"] if r.gpus else "") for r in e4], aiconfigurator)


def build(run_dirs: list[Path], out: Path, title: Optional[str] = None, allow_no_commit: bool = False,
          aiconfigurator: Optional[str] = None) -> Path:
    """Check every run first (nothing is written when one is refused), then copy them and write the README (with a
    peer's predictions beside E4's answers when `aiconfigurator` names its executable: see peer_table)."""
    runs = [load_run(Path(p), allow_no_commit) for p in run_dirs]
    if not runs:
        raise PacketError("no run folders given")
    inside = [str(r.src) for r in runs if Path(out).resolve() in r.src.resolve().parents]
    if inside:     # copying a packet's folders over themselves would delete them before they are read
        raise PacketError(f"{', '.join(inside)}: inside the packet being written; copy the packet elsewhere first "
                          "and pack from there")
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.experiment] = seen.get(r.experiment, 0) + 1
        r.name = r.experiment if seen[r.experiment] == 1 else f"{r.experiment}-{seen[r.experiment]}"
    out = Path(out)
    notes = kept_notes(out / "README.md")
    peers = peer_rows(runs, out, aiconfigurator)        # before anything is written: the peer runs seconds a row
    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        copy_run(r, out / r.name)
    if aiconfigurator:
        peer_table.keep(out, peers)
    title = title or f"ctxkit results: {', '.join(dict.fromkeys(r.experiment for r in runs))}"
    (out / "README.md").write_text(readme(title, runs, notes, peers))
    return out
