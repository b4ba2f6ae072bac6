"""Matplotlib figures for notebooks and reports. Each function returns a Figure and, given a path, saves it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def _save(fig: Figure, path: Optional[Path]) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


def latency_by_prompt(df: pd.DataFrame, path: Optional[Path] = None, title: str = "") -> Figure:
    """TTFT and TPOT per request against prompt length, one marker per server and sampling mode."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
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
