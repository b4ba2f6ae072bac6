"""Matplotlib figures for notebooks and reports. Each function returns a Figure and, given a path, saves it.

Figures are made with matplotlib.figure.Figure, not pyplot: nothing is registered with pyplot, so a notebook shows
a figure exactly where it calls display(fig), once, and no figure lingers in memory across a long sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _save(fig: Figure, path: Optional[Path]) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


def latency_by_prompt(df: pd.DataFrame, path: Optional[Path] = None, title: str = "") -> Figure:
    """TTFT and TPOT per request against prompt length, one marker per server and sampling mode."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    (ax1, ax2) = fig.subplots(1, 2)
    markers = {"greedy": "o", "sampled": "^"}
    for (server, mode), g in df.groupby(["server", "mode"]):
        label = f"{server} / {mode}"
        ax1.plot(g["prompt_tokens"], g["ttft_ms"], markers.get(mode, "s"), label=label, alpha=0.8)
        ax2.plot(g["prompt_tokens"], g["tpot_ms"], markers.get(mode, "s"), label=label, alpha=0.8)
    for ax, what in ((ax1, "TTFT (ms)"), (ax2, "TPOT (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def latency_curve(table: pd.DataFrame, metric: str, path: Optional[Path] = None, title: str = "") -> Figure:
    """p50 with a p95 band and min/max whiskers of `metric` (ttft | tpot) against prompt length; the physical
    floor as a dashed line where the table has one."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    x = table["prompt_len"]
    ax.plot(x, table[f"p50_{metric}_ms"], "o-", label="p50")
    ax.plot(x, table[f"p95_{metric}_ms"], "s--", alpha=0.7, label="p95")
    ax.fill_between(x, table[f"min_{metric}_ms"], table[f"max_{metric}_ms"], alpha=0.15, label="min-max")
    floor_col = "prefill_floor_ms" if metric == "ttft" else "decode_floor_ms"
    if floor_col in table:
        ax.plot(x, table[floor_col], "k:", label="physical floor")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel(f"{metric.upper()} (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric.upper()} vs prompt length")
    return _save(fig, path)


def sweep_curves(table: pd.DataFrame, x: str, path_prefix: Optional[Path] = None,
                 xlabel: str = "") -> dict[str, Figure]:
    """E2's three plots against the sweep variable: throughput, latency percentiles, goodput vs throughput."""
    figs: dict[str, Figure] = {}
    xl = xlabel or x
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.subplots(1, 2)
    ax[0].plot(table[x], table["request_throughput"], "o-")
    ax[0].set_ylabel("requests / s")
    ax[1].plot(table[x], table["output_throughput"], "o-", color="C1")
    ax[1].set_ylabel("output tokens / s")
    for a in ax:
        a.set_xlabel(xl)
        a.grid(True, alpha=0.3)
        a.set_ylim(bottom=0)
    fig.suptitle("Throughput")
    figs["throughput"] = fig
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax = fig.subplots(1, 3)
    for a, metric in zip(ax, ("ttft", "tpot", "e2e")):
        for stat, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            a.plot(table[x], table[f"{stat}_{metric}_ms"], style, label=stat)
        a.set_xlabel(xl)
        a.set_ylabel(f"{metric.upper()} (ms)")
        a.grid(True, alpha=0.3)
        a.set_ylim(bottom=0)
        a.legend(fontsize=8)
    fig.suptitle("Latency")
    figs["latency"] = fig
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(table[x], table["request_throughput"], "o-", label="throughput (req/s)")
    ax.plot(table[x], table["request_goodput"], "s-", label="goodput (req/s meeting every SLO)")
    ax2 = ax.twinx()
    ax2.plot(table[x], 100 * table["slo_attainment"], "k:", label="SLO attainment (%)")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("SLO attainment (%)")
    ax.set_xlabel(xl)
    ax.set_ylabel("requests / s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    ax.set_title("SLO goodput")
    figs["goodput"] = fig
    if x == "concurrency" and table[x].max() / max(table[x].min(), 1) >= 16:   # 1..256: a log axis reads better
        for f in figs.values():
            for a in f.axes:
                if a.get_xlabel():
                    a.set_xscale("log", base=2)
    if path_prefix is not None:
        for name, f in figs.items():
            _save(f, Path(f"{path_prefix}_{name}_curve.svg"))
    return figs


def distributions(frame: pd.DataFrame, by: str, metrics: list[str], path: Optional[Path] = None,
                  title: str = "") -> Figure:
    """Empirical CDFs of each metric, one line per group."""
    fig = Figure(figsize=(3.4 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    for ax, metric in zip(axes if len(metrics) > 1 else [axes], metrics):
        for name, g in frame.groupby(by):
            v = g[metric].dropna().sort_values()
            if len(v):
                ax.step(v, [(i + 1) / len(v) for i in range(len(v))], where="post", label=str(name))
        ax.set_xlabel(metric.replace("_ms", " (ms)").upper())
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def stacked_breakdown(frame: pd.DataFrame, parts: list[str], path: Optional[Path] = None, title: str = "") -> Figure:
    """One stacked bar per request: the parts of its TTFT."""
    fig = Figure(figsize=(max(6.4, 0.25 * len(frame)), 4.0), layout="constrained")
    ax = fig.subplots()
    bottom = [0.0] * len(frame)
    x = list(range(len(frame)))
    for part in parts:
        vals = frame[part].fillna(0).tolist()
        ax.bar(x, vals, bottom=bottom, label=part.replace("_ms", ""))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("request (in completion order)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title or "TTFT breakdown")
    return _save(fig, path)


def attainment_vs_rate(probes: pd.DataFrame, target: float, path: Optional[Path] = None) -> Figure:
    """Every probe's SLO attainment with its 95% Wilson interval against its rate, one series per topology, one
    panel per SLO setting; the target as a line."""
    slos = list(dict.fromkeys(probes["slo"])) if len(probes) else ["-"]
    fig = Figure(figsize=(6.4 * len(slos), 4.2), layout="constrained")
    axes = fig.subplots(1, len(slos), squeeze=False)[0]
    for ax, slo in zip(axes, slos):
        for k, (topo, g) in enumerate(probes[probes["slo"] == slo].groupby("topology", sort=False)):
            g = g.sort_values("rate")
            att = g["attainment"].fillna(0.0)
            err = [(att - g["wilson_low"]).clip(lower=0), (g["wilson_high"] - att).clip(lower=0)]
            ax.errorbar(g["rate"], att, yerr=err, fmt="o", capsize=3, color=f"C{k}", label=topo, alpha=0.85)
            passed = g[g["verdict"] == "pass"]
            ax.plot(passed["rate"], passed["attainment"], "o", mfc="none", ms=11, color=f"C{k}")
        ax.set_xscale("log", base=2)
        rates = sorted(set(probes.loc[probes["slo"] == slo, "rate"].round(3)))
        if rates:    # the probed rates as ticks: a base-2 log axis over less than an octave shows one tick or none
            ax.set_xticks(rates, [f"{r:.3g}" for r in rates], fontsize=7, rotation=45)
            ax.minorticks_off()
        _attainment_axes(ax, target, "Poisson rate (req/s)", "SLO attainment (95% Wilson interval)",
                         f"{slo}: attainment per probe (ringed: passed)", f"target {target:g}")
    return _save(fig, path)


def _attainment_axes(ax, target: float, xlabel: str, ylabel: str, title: str,
                     target_label: Optional[str] = None) -> None:
    """An attainment axis: the target as a dotted line, 0..1, grid, legend, labels."""
    ax.axhline(target, color="k", ls=":", lw=1, label=target_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)


def goodput_bars(goodput: pd.DataFrame, path: Optional[Path] = None) -> Figure:
    """Goodput per GPU (or core set) of each topology with its 90% confidence interval (the bracket, the search's
    resolution, for a summary from before intervals), grouped by SLO setting. Topologies that could not be searched
    (no goodput) are left out; an interval with no upper end is drawn to the top of the axes."""
    goodput = goodput[goodput["goodput_per_device"].notna()] if "goodput_per_device" in goodput else goodput
    fig = Figure(figsize=(max(6.4, 1.6 * len(goodput)), 4.0), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r.topology}\n{r.slo}" for r in goodput.itertuples()]
    vals = goodput["goodput_per_device"].tolist()
    ci = "per_device_interval_low" in goodput
    lows = goodput["per_device_interval_low" if ci else "per_device_low"].fillna(0).tolist()
    top = 1.3 * max(goodput["goodput_per_device"].max() if len(goodput) else 1.0, 1e-9)
    highs = goodput["per_device_interval_high" if ci else "per_device_high"].fillna(top if ci else
                                                                                      goodput["goodput_per_device"])
    highs = highs.tolist()
    colors = [f"C{list(dict.fromkeys(goodput['topology'])).index(t)}" for t in goodput["topology"]]
    ax.bar(range(len(vals)), vals, color=colors, alpha=0.8)
    ax.errorbar(range(len(vals)), vals, yerr=[[max(0.0, v - lo) for v, lo in zip(vals, lows)],
                                              [max(0.0, hi - v) for v, hi in zip(vals, highs)]], fmt="none",
                color="k", capsize=4)
    ax.set_xticks(range(len(vals)), labels, fontsize=8)
    unit = goodput["unit"].iloc[0] if len(goodput) else "device"
    ax.set_ylabel(f"goodput per {unit} (req/s)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("Goodput per device, 90% confidence interval" if ci else
                 "Goodput per device: highest passing rate, bar to lowest failing rate (bracket)")
    return _save(fig, path)


def slo_scale(scale: pd.DataFrame, target: float, path: Optional[Path] = None) -> Figure:
    """Attainment against SLO scale (every objective times s) at each topology's goodput rate (or, where none
    passed, at its lowest rate probed, marked so)."""
    slos = list(dict.fromkeys(scale["slo"]))
    fig = Figure(figsize=(6.0 * len(slos), 4.0), layout="constrained")
    axes = fig.subplots(1, len(slos), squeeze=False)[0]
    for ax, slo in zip(axes, slos):
        for k, (topo, g) in enumerate(scale[scale["slo"] == slo].groupby("topology", sort=False)):
            failed = "probe_verdict" in g and g["probe_verdict"].iloc[0] != "pass"
            ax.plot(g["slo_scale"], g["attainment"], "o-", color=f"C{k}",
                    label=f"{topo} at {g['rate'].iloc[0]:.3g} req/s" + (" (lowest rate probed; failed)" if failed
                                                                         else ""))
        _attainment_axes(ax, target, "SLO scale (objectives x s)", "SLO attainment",
                         f"{slo}: attainment against SLO scale")
    return _save(fig, path)


def capacity_vs_context(capacity: pd.DataFrame, path: Optional[Path] = None) -> Figure:
    """Requests the KV cache held at once against context length: measured (peak of running requests) beside the
    three predictions (the cache's bytes, vLLM's log line, whole blocks)."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    x = capacity["tokens_per_request"]
    for col, style, label in (("analytical", "--", "analytical (cache bytes / request bytes)"),
                              ("vllm_log", ":", "vLLM's startup log"), ("cache_config", "-.", "whole blocks")):
        if col in capacity and capacity[col].notna().any():
            ax.plot(x, capacity[col], style, marker=".", label=label)
    ax.plot(x, capacity["measured"], "o-", color="k", label="measured: peak running requests")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens a request holds (prompt + output)")
    ax.set_ylabel("requests held at once")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("KV capacity against context length")
    return _save(fig, path)


def running_vs_concurrency(levels: pd.DataFrame, path: Optional[Path] = None) -> Figure:
    """Per context length: peak running and peak waiting requests against the client's concurrency; running
    follows the diagonal until the cache is full, then flattens while waiting grows."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (length, g) in enumerate(levels.groupby("context_len")):
        ax.plot(g["concurrency"], g["peak_running"], "o-", color=f"C{i}", label=f"{length:,} tokens: running")
        ax.plot(g["concurrency"], g["peak_waiting"], "x--", color=f"C{i}", label=f"{length:,} tokens: waiting")
    top = float(levels["concurrency"].max())
    ax.plot([0, top], [0, top], color="0.6", lw=0.8, label="running = concurrency")
    ax.set_xlabel("client concurrency")
    ax.set_ylabel("peak requests (server's gauges)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Running and waiting requests against concurrency")
    return _save(fig, path)


def cost_of_context(cost: pd.DataFrame, fit: dict[str, Any], path: Optional[Path] = None) -> Figure:
    """Left: p50 TTFT against context length at batch 1 and the fixed batch, with the fit a + bL + cL^2 (batch 1).
    Right: steady TPOT against the KV bytes a decode step reads (the requests decoding in the steady window), with
    its linear fit."""
    import numpy as np

    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, (batch, g) in enumerate(cost.groupby("batch")):
        left.plot(g["context_len"], g["p50_ttft_ms"], "o", color=f"C{i}", label=f"batch {batch}")
        if "p50_tpot_steady_ms" in g:        # the points the fit uses (ctxkit.experiments.e5_cost.fit_point)
            right.plot(g["kv_bytes_per_step"] * g["steady_running"] / batch / 1e6, g["p50_tpot_steady_ms"], "o",
                       color=f"C{i}", label=f"batch {batch}, steady")
        else:                                # runs from before the steady window
            right.plot(g["kv_bytes_per_step"] / 1e6, g["p50_tpot_ms"], "o", color=f"C{i}", label=f"batch {batch}")
    if fit.get("ttft"):
        f = fit["ttft"]
        x = np.linspace(0, float(cost["context_len"].max()), 100)
        left.plot(x, f["a_ms"] + f["b_ms_per_token"] * x + f["c_ms_per_token2"] * x ** 2, "--", color="C0",
                  label=f"a + bL + cL$^2$ (R$^2$ {f['r2']:.3f})")
    if fit.get("tpot"):
        f = fit["tpot"]
        x = np.linspace(0, float(cost["kv_bytes_per_step"].max()), 100)
        right.plot(x / 1e6, f["d_ms"] + f["e_ms_per_gb"] * x / 1e9, "--", color="k",
                   label=f"d + e x bytes (R$^2$ {f['r2']:.3f})")
    left.set_xlabel("context length (prompt tokens)")
    left.set_ylabel("p50 TTFT (ms)")
    left.set_title("TTFT against context")
    right.set_xlabel("KV a decode step reads (MB)")
    right.set_ylabel("p50 TPOT (ms)")
    right.set_title("TPOT against KV read per step")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def prefix_reuse(prefix: pd.DataFrame, path: Optional[Path] = None) -> Figure:
    """Left: the prefix-cache hit rate the server measured against the shared ratio, cache used and isolated, with
    the rate the workload implies. Right: p50 TTFT against the ratio, both arms."""
    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, (arm, g) in enumerate(prefix.groupby("cache", sort=False)):
        left.plot(g["prefix_ratio"], g["hit_rate"], "o-", color=f"C{i}", label=f"measured, cache {arm}")
        right.plot(g["prefix_ratio"], g["p50_ttft_ms"], "o-", color=f"C{i}", label=f"cache {arm}")
    on = prefix[prefix["cache"] == "on"]
    left.plot(on["prefix_ratio"], on["implied_hit_rate"], "--", color="k", label="implied (whole blocks)")
    left.set_ylabel("prefix-cache hit rate (tokens)")
    right.set_ylabel("p50 TTFT (ms)")
    left.set_title("Prefix-cache hits against the shared ratio")
    right.set_title("TTFT against the shared ratio")
    for ax in (left, right):
        ax.set_xlabel("shared prefix / prompt")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def itl_around_prefills(rows: list[dict[str, Any]], path: Optional[Path] = None) -> Figure:
    """Per chunked-prefill setting: every running decode's inter-token gap on the time axis, each long prefill's
    window (send to first token) shaded."""
    fig = Figure(figsize=(9.6, 2.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, rows):
        for a, b in r.get("windows_s", []):
            ax.axvspan(a, b, color="C3", alpha=0.15)
        pts = r.get("gaps", [])
        # thousands of points as SVG vectors make a figure of megabytes (16 decodes x 2,000 tokens: 10 MB):
        # the points go in as one embedded image, axes and labels stay vectors
        ax.plot([t for t, _ in pts], [g for _, g in pts], ".", ms=3, color="C0", label="decode gaps",
                rasterized=len(pts) > 2000)
        ax.set_ylabel("gap (ms)")
        ax.set_title(f"{r['setting']} ({r.get('flags') or 'defaults'}): shaded = a long prefill running", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("time since the decodes were sent (s)")
    return _save(fig, path)


def server_timeline(timeline: pd.DataFrame, requests: pd.DataFrame, path: Optional[Path] = None,
                    gpu: Optional[pd.DataFrame] = None, span: str = "point") -> Figure:
    """The servers' gauges on the run's time axis beside the client's view: requests the client has in flight
    (sent, not yet answered) against the servers' running and waiting requests (summed over instances), preemptions
    where they happened, and each instance's KV cache usage; with `gpu` (NVML rows with t_ns), each GPU's memory
    used and utilization under it. Each span (a point, a level) shaded and named. `timeline`: t_ns, server and the
    gauges; `requests`: the `span` column, t_send_ns, t_end_ns; all times on the client's clock."""
    t0 = min(int(requests["t_send_ns"].min()), int(timeline["t_ns"].min()))
    t1 = max(int(timeline["t_ns"].max()), int(requests["t_end_ns"].max()))
    gpu = gpu[gpu["t_ns"].between(t0, t1)] if gpu is not None and "t_ns" in gpu else None
    gpu = gpu if gpu is not None and not gpu.empty else None
    sec = lambda ns: (pd.Series(ns, dtype="float64") - t0) / 1e9   # noqa: E731 - one conversion, used throughout
    fig = Figure(figsize=(7.2, 4.6 if gpu is None else 6.2), layout="constrained")
    axes = fig.subplots(2 if gpu is None else 3, 1, sharex=True, height_ratios=[2, 1] if gpu is None else [2, 1, 1])
    top, kv = axes[0], axes[1]
    _in_flight_and_queue(top, timeline, requests, sec)
    for name, g in timeline.groupby("server"):
        kv.plot(*unbridged(sec(g["t_ns"]), 100 * g["kv_cache_usage_perc"]), ".-", ms=3, lw=0.8, label=str(name))
    kv.set_ylabel("KV cache used %")
    kv.legend(fontsize=7, loc="upper left", title="instance", title_fontsize=7)
    if gpu is not None:
        _gpu_panel(axes[2], gpu, sec)
    for i, (name, g) in enumerate(requests.groupby(span, sort=False)):
        lo, hi = sec([g["t_send_ns"].min(), g["t_end_ns"].max()])
        for ax in axes:
            ax.axvspan(lo, hi, color="0.5", alpha=0.08 if i % 2 else 0.16, lw=0)
        top.annotate(str(name), ((lo + hi) / 2, 1.0), xycoords=("data", "axes fraction"), ha="center",
                     va="bottom", fontsize=7)
    axes[-1].set_xlabel(f"seconds since the first measured request ({len(requests)} requests)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


GAP_FACTOR = 5     # a gap between samples over this many times their median one: sampling paused there


def unbridged(x: pd.Series, y: pd.Series, step: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """x and y with a NaN put in where sampling paused (between E5's parts, between E4's probes, while a server
    started), so that no line is drawn across time in which nothing was measured. A pause: a gap over GAP_FACTOR
    sampling steps (`step`: the sampler's own; by default the median gap of x, right for one sampler's rows)."""
    xs, ys = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    if len(xs) < 3:
        return xs, ys
    gaps = np.diff(xs)
    cut = np.flatnonzero(gaps > GAP_FACTOR * (np.median(gaps) if step is None else step)) + 1
    return np.insert(xs, cut, np.nan), np.insert(ys, cut, np.nan)


def scrape_step(timeline: pd.DataFrame, sec) -> Optional[float]:
    """The usual time between two scrapes of one instance, in the units of `sec`: the step of a series merged from
    several instances, each scraped by its own thread (their merged rows fall a few ms apart)."""
    steps = [float(np.median(np.diff(sec(g["t_ns"].sort_values())))) for _, g in timeline.groupby("server")
             if len(g) > 2]
    return max(steps) if steps else None


def summed_over_instances(timeline: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Gauges summed over instances at every scrape time: each instance is scraped by its own thread, so no two
    rows share a time; an instance's last scraped value holds until its next scrape (before its first, nothing)."""
    wide = timeline.pivot_table(index="t_ns", columns="server", values=columns, aggfunc="last").sort_index().ffill()
    return pd.DataFrame({c: wide[c].sum(axis=1, min_count=1) for c in columns})


def _in_flight_and_queue(ax, timeline: pd.DataFrame, requests: pd.DataFrame, sec) -> None:
    """The client's requests in flight, the servers' running and waiting, and a tick where preemptions grew."""
    steps = pd.concat([pd.Series(1, index=requests["t_send_ns"]),
                       pd.Series(-1, index=requests["t_end_ns"].dropna())]).sort_index().cumsum()
    ax.step(sec(steps.index), steps.values, where="post", color="C0", lw=1.2, label="client: in flight")
    summed = summed_over_instances(timeline, ["num_requests_running", "num_requests_waiting"])
    step = scrape_step(timeline, sec)
    ax.plot(*unbridged(sec(summed.index), summed["num_requests_running"], step), ".-", color="C1", ms=3, lw=0.8,
            label="servers: running")
    ax.plot(*unbridged(sec(summed.index), summed["num_requests_waiting"], step), ".-", color="C3", ms=3, lw=0.8,
            label="servers: waiting")
    if "num_preemptions" in timeline:      # a counter: a tick at each scrape where it grew
        grew = [t for _, g in timeline.sort_values("t_ns").groupby("server")
                for t, d in zip(g["t_ns"], g["num_preemptions"].diff()) if d and d > 0]
        if grew:
            ax.plot(sec(grew), [0] * len(grew), "|", color="k", ms=12, label="preemptions grew")
    ax.set_ylabel("requests")
    ax.legend(fontsize=7, loc="upper left")


def _gpu_panel(ax, gpu: pd.DataFrame, sec) -> None:
    """Each GPU's memory used (% of its total, solid) and SM utilization (%, dotted), named by role."""
    for i, (index, g) in enumerate(gpu.groupby("gpu")):
        name = f"GPU {index}" + (f" ({g['role'].iloc[0]})" if isinstance(g["role"].iloc[0], str)
                                 and g["role"].iloc[0] else "")
        if {"memory_used_bytes", "memory_total_bytes"} <= set(g):
            ax.plot(*unbridged(sec(g["t_ns"]), 100 * g["memory_used_bytes"] / g["memory_total_bytes"]), "-",
                    color=f"C{i}", lw=1.0, label=f"{name} memory")
        if "utilization_pct" in g:
            ax.plot(*unbridged(sec(g["t_ns"]), g["utilization_pct"]), ":", color=f"C{i}", lw=1.0,
                    label=f"{name} utilization")
    ax.set_ylabel("GPU %")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
