"""Soak: drive a simulated server at steady load for a set time and watch the client for leaks and drift.

    python benchmarks/soak.py [--minutes 20] [--rate 50] [--window-s 60]

Prints one row per window: requests, failures, client lag p50/p99 (ms), TTFT p50 (ms) and the client process's
RSS, then the RSS growth from the first window to the last. The simulated server (TTFT 20 ms, 5 ms a token, 16
tokens) runs as its own process; the client is ctxkit's own load runner, records streaming to a JSONL file as in a
real run. Needs CTXKIT_ALLOW_SIMULATED_BACKEND=1 (set here: this is a client benchmark, not a serving result).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")

from ctxkit.backends import Simulated  # noqa: E402
from ctxkit.collectors.latency import request_latency  # noqa: E402
from ctxkit.load.arrivals import Arrivals, run_load  # noqa: E402
from ctxkit.load.workloads import LengthDist, synthetic  # noqa: E402
from ctxkit.records import JsonlWriter  # noqa: E402


def soak(seconds: float, rate: float, window_s: float, out=print) -> list[dict]:
    rows = []
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp, Simulated(ttft_ms=20, tpot_ms=5, log_dir=Path(tmp)) as sim, \
            JsonlWriter(Path(tmp) / "requests.jsonl") as sink:
        out(f"{'window':>6} {'requests':>9} {'failed':>7} {'lag p50':>9} {'lag p99':>9} {'TTFT p50':>9} {'RSS MiB':>8}")
        windows = max(1, math.ceil(seconds / window_s))
        for w in range(windows):
            n = max(1, int(rate * min(window_s, seconds - w * window_s)))
            items = synthetic(n, LengthDist("fixed", 64), LengthDist("fixed", 16), vocab_size=4096, seed=w,
                              id_prefix=f"w{w}")
            recs = run_load(sim.base_url, sim.model, items, Arrivals("poisson", rate, seed=w),
                            on_record=lambda r, *_: sink.write(r))
            lags = [(r.t_send_ns - r.t_sched_ns) / 1e6 for r in recs]
            ttft = [request_latency(r).ttft_ms for r in recs if r.ok]
            row = {"window": w, "requests": len(recs), "failed": sum(not r.ok for r in recs),
                   "lag_p50_ms": float(np.percentile(lags, 50)), "lag_p99_ms": float(np.percentile(lags, 99)),
                   "ttft_p50_ms": float(np.median(ttft)) if ttft else float("nan"),
                   "rss_mib": proc.memory_info().rss / 2**20}
            rows.append(row)
            out(f"{w:>6} {row['requests']:>9} {row['failed']:>7} {row['lag_p50_ms']:>9.3f} {row['lag_p99_ms']:>9.3f} "
                f"{row['ttft_p50_ms']:>9.2f} {row['rss_mib']:>8.1f}")
    growth = rows[-1]["rss_mib"] - rows[0]["rss_mib"]
    out(f"client RSS growth first -> last window: {growth:+.1f} MiB over {len(rows)} windows")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=50.0, help="Poisson requests/s")
    ap.add_argument("--window-s", type=float, default=60.0)
    args = ap.parse_args()
    t0 = time.monotonic()
    soak(args.minutes * 60, args.rate, args.window_s)
    print(f"wall {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
