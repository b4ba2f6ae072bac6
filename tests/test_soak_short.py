"""The soak benchmark, short: steady load on a simulated server (explicitly allowed) for 4 windows of 3 s.
No failures, every window's client lag recorded, the client's memory does not grow without bound. How small the lag
stays is a timing, read in the benchmark's output (benchmarks/soak.py), not asserted here: on a busy 2-core CI
machine one window's p99 reached 361 ms while a neighbour test's servers shut down."""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_short_soak(monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    from soak import soak

    lines: list[str] = []
    rows = soak(seconds=12, rate=40, window_s=3, out=lines.append)
    assert len(rows) == 4 and all(r["failed"] == 0 and r["requests"] > 0 for r in rows)
    assert all(math.isfinite(r["lag_p99_ms"]) and r["lag_p50_ms"] <= r["lag_p99_ms"] for r in rows), rows
    assert rows[-1]["rss_mib"] - rows[1]["rss_mib"] < 30      # after the first window's imports and buffers
    assert "client RSS growth" in lines[-1]
