"""Writes docs/results/README.md: every results packet, its runs, their commits, and the goodput-search rules each E4
run was made under, read from the runs' own files (never typed by hand).

    python tools/results_index.py [docs/results]

A goodput search's rules show in what its summary holds: a 90% confidence interval and the closing repeat check
(`interval_low` in its goodput rows: the current rules); scouts (a `scout` column in its probes) without an
interval; neither (before scouts). Answers from before intervals carry only a bracket, the search's resolution.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RULES = {"interval": "current: 90% interval, clean start, repeat check",
         "scouts": "earlier: scouts, bracket only (no interval, no repeat check)",
         "before": "earlier: before scouts, bracket only (no interval, no repeat check)"}


def rules(summary: dict) -> str:
    goodput, probes = summary.get("goodput") or [summary.get("search") or {}], summary.get("probes") or [{}]
    if any("interval_low" in g for g in goodput):
        return RULES["interval"]
    return RULES["scouts"] if any("scout" in p for p in probes) else RULES["before"]


def runs(packet: Path) -> list[tuple[str, str, str, str]]:
    """(run, experiment, commit, search rules) of each run folder in a packet."""
    out = []
    for meta_file in sorted(packet.glob("*/run_metadata.json")):
        meta = json.loads(meta_file.read_text())
        summary_file = meta_file.with_name("summary.json")
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        experiment = meta.get("experiment", "?")
        commit = ((meta.get("git") or {}).get("commit") or "none")[:12]
        searched = experiment == "e4_goodput" or "search" in summary
        out.append((meta_file.parent.name, experiment, commit, rules(summary) if searched else "-"))
    return out


def index(root: Path) -> str:
    lines = ["# Results packets", "",
             "Written by `python tools/results_index.py` from the packets' own run folders; regenerate it after adding "
             "a packet. The search rules column says which goodput-search rules an E4 run was made under: answers "
             "made under earlier rules carry a bracket (the search's resolution), not a confidence interval, and their "
             "verdicts near the knee were never checked for repeating (docs/metrics.md).", ""]
    for packet in sorted((p for p in root.iterdir() if (p / "README.md").is_file()), reverse=True):
        title = (packet / "README.md").read_text().splitlines()[0].lstrip("# ").strip()
        lines += [f"## [{packet.name}]({packet.name}/README.md)", "", title, "",
                  "| run | experiment | commit | goodput-search rules |", "| --- | --- | --- | --- |"]
        lines += [f"| {run} | {experiment} | {commit} | {rule} |" for run, experiment, commit, rule in runs(packet)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    (root / "README.md").write_text(index(root))
    print(f"wrote {root / 'README.md'}")


if __name__ == "__main__":
    main()
