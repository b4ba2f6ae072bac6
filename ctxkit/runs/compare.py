"""`ctxkit compare RUN_DIR RUN_DIR...`: runs of one experiment overlaid in one comparison report.

Curves on shared axes, a table of headline numbers, and the differences in parameters, hardware and versions.
Written to runs/compare/<run id>/ (report.html with inline SVG, headline.csv, differences.csv, inputs.json)."""
from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml
from matplotlib.figure import Figure

from ctxkit.runs.folder import RunFolder, RunFolderError, atomic_write_json, atomic_write_text

# experiment -> (curve CSV, x column, [(y column, axis label)])
CURVES: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "e1_latency": ("e1_latency_curve.csv", "prompt_len",
                   [("p50_ttft_ms", "p50 TTFT (ms)"), ("p50_tpot_ms", "p50 TPOT (ms)")]),
    "e2_concurrency": ("e2_concurrency_curve.csv", "concurrency",
                       [("output_throughput", "output tok/s"), ("p95_ttft_ms", "p95 TTFT (ms)"),
                        ("request_goodput", "goodput (req/s)")]),
    "e0_smoke": ("e0_requests.csv", "prompt_tokens", [("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)")]),
}


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def headline(run: RunFolder, meta: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    lat = summary.get("profiling", {}).get("latency", {})
    hw = meta.get("hardware", {})
    gpus = ", ".join(d.get("name", "?") for d in hw.get("gpus", {}).get("devices", [])) or "none"
    row: dict[str, Any] = {"run": run.run_id, "label": meta.get("label", ""), "status": run.status(),
                           "backend": meta.get("backend_mode", "?"), "model": meta.get("model_card", {}).get("name"),
                           "gpus": gpus, "vllm": meta.get("versions", {}).get("vllm")}
    for key in ("ttft_ms", "tpot_ms"):
        if isinstance(lat.get(key), dict):
            row[f"p50_{key}"] = lat[key].get("p50")
    sweep = summary.get("sweep") or []
    if sweep and "output_throughput" in sweep[0]:
        row["max_output_throughput"] = max(p.get("output_throughput") or 0 for p in sweep)
        row["max_request_goodput"] = max(p.get("request_goodput") or 0 for p in sweep)
    checks = summary.get("checks", {})
    row["checks_passed"] = f"{sum(bool(c.get('passed')) for c in checks.values())}/{len(checks)}"
    return row


def differences(runs: list[RunFolder], metas: list[dict], params: list[dict]) -> pd.DataFrame:
    rows = []
    for section, items in (("parameter", params), ("hardware", [m.get("hardware", {}) for m in metas]),
                           ("version", [m.get("versions", {}) for m in metas]),
                           ("git", [m.get("git", {}) for m in metas])):
        flat = [_flatten(x) for x in items]
        for key in sorted(set().union(*flat)):
            values = [f.get(key) for f in flat]
            if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
                rows.append({"kind": section, "key": key, **{r.run_id: v for r, v in zip(runs, values)}})
    return pd.DataFrame(rows, columns=["kind", "key", *(r.run_id for r in runs)])


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def curve_columns(experiment: str, runs: list[RunFolder]) -> list[str]:
    """Numeric columns the runs' curve CSVs share (what a viewer may plot)."""
    if experiment not in CURVES:
        return []
    csv, x, _ = CURVES[experiment]
    cols: Optional[set[str]] = None
    for run in runs:
        path = run.artifacts / csv
        if path.is_file():
            frame = pd.read_csv(path)
            numeric = {c for c in frame.columns if c != x and pd.api.types.is_numeric_dtype(frame[c])}
            cols = numeric if cols is None else cols & numeric
    return sorted(cols or [])


def overlay(experiment: str, runs: list[RunFolder], labels: list[str],
            metrics: Optional[list[str]] = None) -> list[Figure]:
    """One figure per metric, every run a line on shared axes (default metrics: the experiment's headline ones)."""
    if experiment not in CURVES:
        return []
    csv, x, ys = CURVES[experiment]
    if metrics:
        ys = [(m, m) for m in metrics]
    frames = []
    for run in runs:
        path = run.artifacts / csv
        frames.append(pd.read_csv(path) if path.is_file() else None)
    figs = []
    for y, label in ys:
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        ax = fig.subplots()
        for frame, name in zip(frames, labels):
            if frame is None or y not in frame or x not in frame:
                continue
            data = frame.dropna(subset=[x, y]).sort_values(x)
            if experiment == "e0_smoke":
                data = data.groupby(x, as_index=False)[y].median()
            ax.plot(data[x], data[y], "o-", label=name)
        if experiment in ("e1_latency", "e0_smoke"):
            ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(label)
        figs.append(fig)
    return figs


def compare(run_dirs: list[Path], out_root: Path) -> Path:
    if len(run_dirs) < 2:
        raise RunFolderError("compare needs at least two run folders")
    runs = [RunFolder.open(p) for p in run_dirs]
    experiments = {r.experiment for r in runs}
    if len(experiments) > 1:
        raise RunFolderError(f"compare takes runs of one experiment; got {', '.join(sorted(experiments))}")
    (experiment,) = experiments
    metas = [_load(r.path / "run_metadata.json") for r in runs]
    summaries = [_load(r.path / "summary.json") for r in runs]
    params = []
    for r in runs:
        try:
            params.append(yaml.safe_load((r.path / "params.yaml").read_text()) or {})
        except (OSError, yaml.YAMLError):
            params.append({})
    labels = [f"{m.get('label') or r.run_id[-8:]}" for r, m in zip(runs, metas)]
    head = pd.DataFrame([headline(r, m, s) for r, m, s in zip(runs, metas, summaries)])
    diff = differences(runs, metas, params)
    out = RunFolder.create(out_root, "compare")
    head.to_csv(out.artifacts / "headline.csv", index=False)
    diff.to_csv(out.artifacts / "differences.csv", index=False)
    figs = overlay(experiment, runs, labels)
    for i, fig in enumerate(figs):
        fig.savefig(out.artifacts / f"compare_{i}.svg", bbox_inches="tight")
    atomic_write_json(out.path / "inputs.json", {"experiment": experiment, "runs": [str(r.path) for r in runs]})
    simulated = any(m.get("backend_mode") == "simulated" for m in metas)
    body = [f"<h1>ctxkit comparison: {html.escape(experiment)}</h1>",
            f"<p>{len(runs)} runs; comparison {html.escape(out.run_id)}</p>"]
    if simulated:
        body.append('<div class="banner" id="ctxkit-simulated-banner">SIMULATED BACKEND in at least one run: '
                    'its numbers come from ctxkit\'s latency model, not from vLLM.</div>')
    body += ["<h2>Headline numbers</h2>", head.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}"),
             "<h2>Curves</h2>", *(f'<div class="fig">{_svg(f)}</div>' for f in figs)]
    if not figs:
        body.append("<p>No curves for this experiment.</p>")
    body += ["<h2>Differences</h2>",
             diff.to_html(index=False, na_rep="-") if len(diff) else "<p>No differences in parameters, hardware, "
                                                                       "versions or code.</p>"]
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ctxkit compare "
            f"{html.escape(experiment)}</title><style>body{{font-family:system-ui,sans-serif;margin:2em}}"
            "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
            ".fig{display:inline-block;margin:0.5em}.banner{background:#c0392b;color:#fff;padding:0.6em;"
            "font-weight:bold}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out.path / "report.html", page)
    out.set_status("succeeded")
    return out.path
