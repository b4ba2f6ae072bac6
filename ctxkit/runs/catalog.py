"""The runs on disk as a table, for `ctxkit ls` style listings and the explore_runs notebook."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ctxkit.runs.folder import RUN_ID_RE, RunFolder


def _load(path: Path) -> dict[str, Any]:
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
        meta = _load(path / "run_metadata.json")
        rows.append({"run_id": run.run_id, "experiment": run.experiment, "status": run.status(),
                     "backend_mode": meta.get("backend_mode", "?"), "label": meta.get("label", ""),
                     "model": meta.get("model_card", {}).get("name", "?"), "hardware": hardware_name(meta),
                     "created_utc": meta.get("created_utc", ""), "path": str(path)})
    return pd.DataFrame(rows, columns=["run_id", "experiment", "status", "backend_mode", "label", "model", "hardware",
                                       "created_utc", "path"])
