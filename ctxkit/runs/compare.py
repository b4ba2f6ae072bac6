"""`ctxkit compare RUN_DIR RUN_DIR...`: runs of one experiment overlaid in one comparison report.

Curves on shared axes, a table of headline numbers, and the differences in parameters, hardware and versions.
Written to runs/compare/<run id>/ (report.html with inline SVG, headline.csv, differences.csv, inputs.json)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure

from ctxkit.runs.folder import RunFolder, RunFolderError, atomic_write_json, atomic_write_text, stored
from ctxkit.runs.placements import intervals_separate
from ctxkit.workspace import resources_root

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


def _searched(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's goodput answers: E4's rows (one per topology and SLO), or `ctxkit bench --search`'s one."""
    if isinstance(summary.get("search"), dict):
        return [{"topology": "(server)", "slo": "-", **summary["search"]}]
    return [g for g in summary.get("goodput") or [] if isinstance(g, dict) and "goodput" in g]


def against(first: dict[str, Any], row: dict[str, Any]) -> str:
    """A goodput against the first run's: higher or lower only where the two 90% intervals separate."""
    if row.get("interval_low") is None or first.get("interval_low") is None:
        return "no interval (a bracket only)"
    ratio = f": {row['goodput'] / first['goodput']:.2f}x" if first["goodput"] else ""
    if intervals_separate(row, first, per_device=False):
        return f"higher{ratio}, the intervals separate"
    if intervals_separate(first, row, per_device=False):
        return f"lower{ratio}, the intervals separate"
    return "the intervals overlap: no direction"


def goodput_table(labels: list[str], summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """Every run's goodput with its 90% interval, per topology and SLO, each set against the first run that has the
    same topology and SLO."""
    rows: list[dict[str, Any]] = []
    first: dict[tuple[Any, Any], dict[str, Any]] = {}
    for label, summary in zip(labels, summaries):
        for g in _searched(summary):
            key = (g.get("topology"), g.get("slo"))
            base = first.setdefault(key, g)
            rows.append({"run": label, "topology": key[0], "SLO": key[1], "goodput req/s": g.get("goodput"),
                         "90% low": g.get("interval_low"), "90% high": g.get("interval_high"),
                         "against the first run": "-" if base is g else against(base, g)})
    return pd.DataFrame(rows)


def differences(runs: list[RunFolder], metas: list[dict[str, Any]], params: list[dict[str, Any]]) -> pd.DataFrame:
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
        path = stored(run.artifacts / csv)
        if path:
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
        path = stored(run.artifacts / csv)
        frames.append(pd.read_csv(path) if path else None)
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


def render_page(experiment: str, compare_id: str, runs: list[RunFolder], labels: list[str], head: pd.DataFrame,
                diff: pd.DataFrame, figs: list[Figure], *, simulated: bool,
                goodput: Optional[pd.DataFrame] = None) -> str:
    """report.html from templates/compare/report.html.j2 (Jinja2, autoescaped; tables and SVGs go in as markup)."""
    env = Environment(loader=FileSystemLoader(resources_root() / "templates" / "compare"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined)
    return env.get_template("report.html.j2").render(
        experiment=experiment, compare_id=compare_id, simulated=simulated,
        runs=[{"label": label, "path": str(r.path)} for r, label in zip(runs, labels)],
        headline_table=Markup(head.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}")),
        differences_table=Markup(diff.to_html(index=False, na_rep="-")) if len(diff) else "",
        goodput_table=Markup(goodput.to_html(index=False, na_rep="unbounded", float_format=lambda v: f"{v:.3g}"))
        if goodput is not None and len(goodput) else "",
        figures=[Markup(_svg(f)) for f in figs])


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
    goodput = goodput_table(labels, summaries)
    out = RunFolder.create(out_root, "compare")
    if len(goodput):
        goodput.to_csv(out.artifacts / "goodput.csv", index=False)
    head.to_csv(out.artifacts / "headline.csv", index=False)
    diff.to_csv(out.artifacts / "differences.csv", index=False)
    figs = overlay(experiment, runs, labels)
    for i, fig in enumerate(figs):
        fig.savefig(out.artifacts / f"compare_{i}.svg", bbox_inches="tight")
    atomic_write_json(out.path / "inputs.json", {"experiment": experiment, "runs": [str(r.path) for r in runs]})
    page = render_page(experiment, out.run_id, runs, labels, head, diff, figs,
                       simulated=any(m.get("backend_mode") == "simulated" for m in metas), goodput=goodput)
    atomic_write_text(out.path / "report.html", page)
    out.set_status("succeeded")
    return out.path
