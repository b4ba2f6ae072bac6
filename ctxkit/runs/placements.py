"""E4 placements across the runs of one packet: one table per (model, SLO, workload, target), every topology of
every E4 run that measured it, ranked by per-GPU goodput.

A four-GPU placement search is long (about 16 minutes a pair of topologies), so it may be run in halves (aggregated x4 with
2P2D, then 1P3D with 3P1D). Each half's own table compares only its two topologies; this one puts them side by side
where their parameters say they measured the same thing, and keeps apart what differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

WORKLOAD_KEYS = ("dataset", "dataset_path", "input_len", "input_dist", "input_std", "range_ratio", "output_len",
                 "output_dist", "output_std", "prefix_len", "num_prefixes", "trace_start_ms", "trace_duration_ms",
                 "trace_speedup")


@dataclass
class Row:
    run: str                      # the run's folder in the packet
    commit: str
    goodput: dict[str, Any]       # one entry of summary["goodput"]
    compiled: str = "compiled"    # how its servers ran the model: compiled | eager (compilation)


def compilation(params: dict[str, Any]) -> str:
    server = params.get("server") or {}
    return "eager" if server.get("enforce_eager") or "--enforce-eager" in (server.get("extra_args") or []) \
        else "compiled"


def group_key(params: dict[str, Any], slo_name: str) -> Optional[tuple[Any, ...]]:
    slo = next((s for s in params.get("slos") or [] if s.get("name") == slo_name), None)
    if slo is None or params.get("backend") == "topology":
        # an attached deployment's model is not server.model (that is only the card that sizes the prompts), and
        # its shape is its topology file's: nothing here says two such runs measured the same thing
        return None
    w = params.get("workload") or {}
    search = params.get("search") or {}
    server = params.get("server") or {}
    # a key a run predates reads as its default then (e.g. trace_start_ms before trace windows existed)
    defaults = {"trace_start_ms": 0.0, "trace_speedup": 1.0, "num_prefixes": 1}
    return (server.get("model"), server.get("model_source"), slo_name, slo.get("ttft_ms"), slo.get("tpot_ms"),
            slo.get("e2e_ms"), search.get("target"), search.get("mode"), search.get("arrival", "poisson"),
            tuple(w.get(k, defaults.get(k)) for k in WORKLOAD_KEYS))


def describe(key: tuple[Any, ...]) -> str:
    model, _source, name, ttft, tpot, e2e, target, mode, arrival, w = key
    wl = dict(zip(WORKLOAD_KEYS, w))
    slo = ", ".join(f"{k} {v:,.0f} ms" for k, v in (("TTFT", ttft), ("TPOT", tpot), ("E2E", e2e)) if v)
    what = (f"trace {wl['dataset_path']}" if wl["dataset"] == "trace" else
            f"{wl['dataset']} workload, {wl['input_len']:,} in ({wl['input_dist']}) / {wl['output_len']:,} out "
            f"({wl['output_dist']})")
    return f"{model}, SLO {name} ({slo}), {mode} attainment >= {target:.0%}; {what}, {arrival} arrivals"


def groups(runs: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> dict[tuple[Any, ...], list[Row]]:
    """runs: (folder, commit, summary, params) of each E4 run. Topologies whose SLO is not in the params are left
    out (nothing to group them by)."""
    out: dict[tuple[Any, ...], list[Row]] = {}
    for name, commit, summary, params in runs:
        for g in summary.get("goodput") or []:
            if isinstance(g.get("error"), str):  # a topology that could not be searched: nothing to rank
                continue
            key = group_key(params, g.get("slo"))
            if key is not None:
                out.setdefault(key, []).append(Row(name, commit, g, compilation(params)))
    return out


def has_interval(g: dict[str, Any]) -> bool:
    return "per_device_interval_low" in g


def interval(g: dict[str, Any]) -> str:
    """A row's 90% interval per GPU; a summary from before intervals shows its bracket, named as such."""
    def fmt(x: Any) -> str:
        return "-" if x is None or x != x else f"{x:.2f}"     # None, or NaN from a table's missing cell
    if has_interval(g):
        return f"{fmt(g['per_device_interval_low'])}-{fmt(g.get('per_device_interval_high'))}"
    return f"bracket {fmt(g.get('per_device_low'))}-{fmt(g.get('per_device_high'))}"


def intervals_separate(a: Any, b: Any, per_device: bool = True) -> bool:
    """Whether goodput row a's 90% interval (per GPU, or on the whole goodput) lies above row b's (dicts or table
    rows; a missing end, None or NaN, never separates)."""
    prefix = "per_device_" if per_device else ""
    low, high = a.get(f"{prefix}interval_low"), b.get(f"{prefix}interval_high")
    return bool(low is not None and low == low and high is not None and high == high and low > high)


def verdict(rows: list[Row]) -> str:
    """The winner per GPU and whether its 90% interval clears the runner-up's. Summaries from before intervals have
    only brackets (the searches' resolution): those never settle an order."""
    ranked = sorted(rows, key=lambda r: -(r.goodput.get("goodput_per_device") or 0))
    if len(ranked) < 2:
        return ""
    a, b = ranked[0].goodput, ranked[1].goodput
    if ranked[0].compiled != ranked[1].compiled:
        return (f"Not compared: {a['topology']} ran {ranked[0].compiled}, {b['topology']} {ranked[1].compiled} "
                "(arms compare at their best, compiled alike).")
    if not b.get("goodput_per_device"):
        return f"Winner per GPU: {a['topology']} (the runner-up {b['topology']} served nothing within SLO)."
    ratio = a["goodput_per_device"] / b["goodput_per_device"]
    if not (has_interval(a) and has_interval(b)):
        return (f"Winner per GPU: {a['topology']}, {ratio:.2f}x the runner-up {b['topology']}; no confidence "
                "intervals (runs from before them): the order is not settled.")
    separate = intervals_separate(a, b)
    return (f"Winner per GPU: {a['topology']}, {ratio:.2f}x the runner-up {b['topology']}; the 90% intervals "
            + ("separate." if separate else "overlap: the order is not settled."))
