"""The runs on disk as a table, for `ctxkit ls` style listings and the explore_runs notebook."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ctxkit.runs.folder import RUN_ID_RE, RunFolder


def load_json(path: Path) -> dict[str, Any]:
    """A run file's JSON object, or {} when it is missing or damaged (listings never fail on one bad run)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def hardware_name(meta: dict[str, Any]) -> str:
    hw = meta.get("hardware", {})
    gpus = [d.get("name", "?") for d in hw.get("gpus", {}).get("devices", [])]
    return f"{len(gpus)}x {gpus[0]}" if gpus else f"CPU: {hw.get('cpu', '?')} x{hw.get('cpu_count', '?')}"


def runs_table(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(root).glob("*/run-*")):
        if not path.is_dir() or not RUN_ID_RE.match(path.name):
            continue
        run = RunFolder(path)
        meta = load_json(path / "run_metadata.json")
        rows.append({"run_id": run.run_id, "experiment": run.experiment, "status": run.status(),
                     "backend_mode": meta.get("backend_mode", "?"), "label": meta.get("label", ""),
                     "model": meta.get("model_card", {}).get("name", "?"), "hardware": hardware_name(meta),
                     "created_utc": meta.get("created_utc", ""), "path": str(path)})
    return pd.DataFrame(rows, columns=["run_id", "experiment", "status", "backend_mode", "label", "model", "hardware",
                                       "created_utc", "path"])


def headline(summary: dict[str, Any]) -> str:
    """One line of a run's headline numbers for listings: median TTFT/TPOT and the checks passed."""
    lat = summary.get("profiling", {}).get("latency", {})
    parts = []
    for key, label in (("ttft_ms", "TTFT p50"), ("tpot_ms", "TPOT p50")):
        value = (lat.get(key) or {}).get("p50") if isinstance(lat.get(key), dict) else None
        if value is not None:
            parts.append(f"{label} {value:.1f} ms")
    checks = summary.get("checks", {})
    if checks:
        parts.append(f"checks {sum(bool(c.get('passed')) for c in checks.values())}/{len(checks)}")
    return ", ".join(parts)
