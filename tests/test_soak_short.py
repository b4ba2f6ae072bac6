"""The soak benchmark, short: steady load on a simulated server (explicitly allowed) for 4 windows of 3 s.
No failures, client lag stays small, the client's memory does not grow without bound."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_short_soak(monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    from soak import soak

    lines: list[str] = []
    rows = soak(seconds=12, rate=40, window_s=3, out=lines.append)
    assert len(rows) == 4 and all(r["failed"] == 0 and r["requests"] > 0 for r in rows)
    assert max(r["lag_p99_ms"] for r in rows) < 20            # a loaded 2-core CI machine: generous but bounded
    assert rows[-1]["rss_mib"] - rows[1]["rss_mib"] < 30      # after the first window's imports and buffers
    assert "client RSS growth" in lines[-1]
