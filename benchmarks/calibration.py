"""Calibration at high concurrency: ctxkit's client against a simulated server with a known latency model.

    python benchmarks/calibration.py [--streams 64] [--requests 512] [--ttft-ms 50] [--tpot-ms 10]

Prints, per quantity, the model's value, what the simulator actually did (its own per-request token times, which
run late when the simulator itself is busy), and what ctxkit measured, with the client's error against the
simulator's own times. On a busy machine the simulator drifts from the model; the client error is what ctxkit owns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")

from ctxkit.backends import Simulated  # noqa: E402
from ctxkit.collectors.latency import request_latency  # noqa: E402
from ctxkit.load.arrivals import Arrivals, run_load  # noqa: E402
from ctxkit.load.workloads import LengthDist, synthetic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--tpot-ms", type=float, default=10.0)
    args = ap.parse_args()
    # Output lengths vary (12..36), as in any real workload: with identical lengths every stream would end and
    # restart in lockstep, and each round would be a burst that queues in the simulator itself.
    items = synthetic(args.requests, LengthDist("fixed", 128), LengthDist("uniform", 24, low=12, high=36),
                      vocab_size=4096, seed=0)
    warm = synthetic(args.streams, LengthDist("fixed", 16), LengthDist("fixed", 4), vocab_size=4096, seed=1,
                     id_prefix="w")
    with tempfile.TemporaryDirectory() as tmp:
        truth_log = Path(tmp) / "truth.jsonl"
        with Simulated(ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, log_dir=Path(tmp), truth_log=truth_log) as sim:
            records = run_load(sim.base_url, sim.model, items, Arrivals("concurrency", concurrency=args.streams),
                               warmup=warm)
        truth = {row["request_id"]: row for row in map(json.loads, truth_log.read_text().splitlines())}
    rows = {"ttft": ([], [], args.ttft_ms), "tpot": ([], [], args.tpot_ms)}
    for rec in (r for r in records if not r.warmup and r.ok):
        t, lat = truth[rec.request_id], request_latency(rec)
        server_ttft = (t["t_first_sent_ns"] - t["t_handler_ns"]) / 1e6
        server_tpot = (t["t_last_sent_ns"] - t["t_first_sent_ns"]) / 1e6 / (t["n_out"] - 1)
        for name, server, client in (("ttft", server_ttft, lat.ttft_ms), ("tpot", server_tpot, lat.tpot_ms)):
            rows[name][0].append(server)
            rows[name][1].append(client)
    print(f"{args.streams} streams, {args.requests} requests; p50 in ms")
    print(f"{'metric':6} {'model':>8} {'simulator':>10} {'ctxkit':>8} {'client error p50/p99':>22}")
    for name, (server, client, model) in rows.items():
        err = np.asarray(client) - np.asarray(server)
        print(f"{name:6} {model:8.2f} {np.median(server):10.2f} {np.median(client):8.2f} "
              f"{np.median(err):10.3f} / {np.percentile(err, 99):.3f}")


if __name__ == "__main__":
    main()
