"""report.html: the executed notebook through nbconvert and templates/ctxkit, self-contained and readable offline.

Cells tagged `remove_input` show only their output, `remove_cell` nothing; figures are inline (SVG/PNG in the
notebook's outputs, and images referenced from markdown are embedded)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor
from traitlets.config import Config

from ctxkit.runs.folder import RunFolder, atomic_write_text
from ctxkit.workspace import resources_root

REPORT = "report.html"
REQUIRED = ("run_metadata.json", "notebook.ipynb")


class ReportError(RuntimeError):
    pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def header(run: RunFolder) -> dict[str, Any]:
    meta = _read_json(run.path / "run_metadata.json") or {}
    failure = _read_json(run.path / "failure.json") or {}
    hw = meta.get("hardware", {})
    gpus = hw.get("gpus", {})
    gpu_text = ", ".join(d["name"] for d in gpus.get("devices", [])) or "none"
    if gpus.get("driver"):
        gpu_text += f" (driver {gpus['driver']})"
    versions = meta.get("versions", {})
    card = meta.get("model_card", {})
    git = meta.get("git", {})
    rows = [
        ("experiment", meta.get("experiment", run.experiment)),
        ("run id", run.run_id),
        ("label", meta.get("label") or "-"),
        ("date (UTC)", meta.get("created_utc", "?")),
        ("status", run.status()),
        ("backend", f"{meta.get('backend', '?')} ({meta.get('backend_mode', '?')})"),
        ("model", f"{card.get('name', '?')}: {card.get('layers', '?')} layers, hidden {card.get('hidden_size', '?')}, "
                  f"{card.get('parameters', 0) / 1e6:,.1f} M parameters, weights {meta.get('weights', '?')}"),
        ("vLLM", f"{versions.get('vllm')} ({versions.get('vllm_distribution')}), torch {versions.get('torch')}, "
                 f"Python {versions.get('python')}"),
        ("hardware", f"{hw.get('cpu', '?')} x{hw.get('cpu_count', '?')}, {hw.get('memory_gib', '?')} GiB; GPUs: {gpu_text}"),
        ("config hash", meta.get("config_hash", "?")),
        ("code", f"ctxkit {versions.get('ctxkit')} @ {str(git.get('commit') or '?')[:12]}"
                 f"{' (uncommitted changes)' if git.get('dirty') else ''}"
                 f"{'' if git.get('dirty') is not None else ' (dirty state unknown)'}"
                 f"{', package files sha256 ' + git['package_sha256'][:12] if git.get('package_sha256') else ''}"),
    ]
    return {
        "title": f"ctxkit {meta.get('experiment', run.experiment)} - {run.run_id}",
        "backend_mode": meta.get("backend_mode", "real"),
        "status": run.status(),
        "failure": f"{failure.get('error_type', '')}: {failure.get('message', '')}"[:300] if failure else "",
        "rows": rows,
    }


def render_report(run_dir: Path, *, overwrite: bool = True) -> Path:
    """Render (again) report.html from the run folder's executed notebook. Says what is missing if it can't."""
    run = RunFolder.open(run_dir)
    missing = [name for name in REQUIRED if not run.has(name)]
    if missing:
        raise ReportError(f"cannot render {run.path / REPORT}: missing {', '.join(missing)}")
    try:
        nb = nbformat.read(run.path / "notebook.ipynb", as_version=4)
    except Exception as exc:  # nbformat raises several types for damaged JSON
        raise ReportError(f"cannot render {run.path / REPORT}: notebook.ipynb is damaged ({exc})") from None
    # Saved widget state would make nbconvert load the widget manager from a CDN: a report stays offline.
    nb.metadata.pop("widgets", None)
    config = Config()
    config.TagRemovePreprocessor.remove_input_tags = {"remove_input", "hide_input"}
    # The parameters cells are long dicts; the Setup section shows the resolved parameters instead.
    config.TagRemovePreprocessor.remove_cell_tags = {"remove_cell", "parameters", "injected-parameters"}
    config.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(config=config, template_name="ctxkit",
                            extra_template_basedirs=[str(resources_root() / "templates")])
    exporter.register_preprocessor(TagRemovePreprocessor(config=config), enabled=True)
    exporter.embed_images = True
    resources = {"ctxkit": header(run), "metadata": {"name": f"{run.experiment} {run.run_id}"}}
    html, _ = exporter.from_notebook_node(nb, resources=resources)
    return atomic_write_text(run.path / REPORT, html, overwrite=overwrite)
