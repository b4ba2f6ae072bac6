"""A clone carries every results packet: docs/results stays small (packets keep reports and big artifacts gzipped,
tools/compact_results.py)."""
from __future__ import annotations

from pathlib import Path

LIMIT_BYTES = 15_000_000


def test_the_results_packets_stay_under_15_mb():
    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    files = [f for f in root.rglob("*") if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    biggest = sorted(files, key=lambda f: f.stat().st_size)[-3:]
    assert total <= LIMIT_BYTES, f"docs/results holds {total / 1e6:.1f} MB; largest: {biggest}"
    assert not [f for f in files if f.name == "report.html"], "a packet keeps its report gzipped"
