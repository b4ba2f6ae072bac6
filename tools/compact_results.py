"""Compacts the packets under docs/results to the form `ctxkit packet` writes now: in each run folder of a packet,
report.html and every file over packet.COMPRESS_BYTES gzipped (packet.compact), and the packet README's links to a
report pointed at its gzipped copy. Mechanical: no number and no other line of a packet changes.

    python tools/compact_results.py [docs/results]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ctxkit.runs import packet


def compact_packet(folder: Path) -> None:
    readme = folder / "README.md"
    text = readme.read_text()
    for run in sorted(p.parent for p in folder.glob("*/run_metadata.json")):
        packet.compact(run)
        if (run / "report.html.gz").is_file():
            text = re.sub(rf"\]\({re.escape(run.name)}/report\.html\)", f"]({run.name}/report.html.gz)", text)
    readme.write_text(text)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    before = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    for folder in sorted(p for p in root.iterdir() if (p / "README.md").is_file()):
        compact_packet(folder)
    after = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"{root}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
