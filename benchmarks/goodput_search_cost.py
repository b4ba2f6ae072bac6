"""What the goodput search costs against a linear rate sweep that reaches the same resolution.

    python benchmarks/goodput_search_cost.py [--seed 0] [--seeds 0,1,2]

A simulated server with a capacity known in closed form (8 FCFS prefill slots, exponential 80 ms service: an M/M/8
queue; 90% of TTFTs within 300 ms up to lambda* = 89.1 req/s; the test's queue, tests/test_goodput_search.py). Both methods use the same probes (the same Poisson
streams, Wilson verdicts, steady-state checks). The search brackets by doubling with scouts (probes that may pass on 40 requests) and narrows to 5% with full
probes, once from 20 req/s (a start far below capacity, as a user without a guess would pick) and once from the
sweep's own lowest level.
The sweep, in the style of vLLM's serve workload sweeps, probes 10 evenly spaced rates up to twice the capacity
(an informed range: it favours the sweep), then 10 evenly spaced rates between the last pass and the first fail,
a resolution of about 2% of the range. Prints each method's answer, probes, requests and wall time, and the
search's share of the sweep's wall time. With --seeds, once per seed (other Poisson streams and service times),
then the mean share and the spread of the answers: one seed's share moves by about 0.1 with the probes that land
near the knee, so a goal on it is judged on the mean.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")

from test_goodput_search import MU, TARGET, K, S, capacity, items  # noqa: E402

from ctxkit.backends import Simulated  # noqa: E402
from ctxkit.collectors.latency import SLO  # noqa: E402
from ctxkit.load.search import SearchPolicy, run_probe, search  # noqa: E402

POLICY = dict(target=TARGET, min_requests=300, max_requests=600, warmup_requests=20, warmup_s=6.0, min_duration_s=4.0,
              max_probes=30)


def sweep(sim: Simulated, slo: SLO, policy: SearchPolicy, top: float) -> tuple[float, list]:
    probes, index = [], 0

    def probe(rate: float):
        nonlocal index
        p = run_probe(sim, index, rate, items(policy.seed), slo, policy, timeout_s=30)
        index += 1
        probes.append(p)
        return p.verdict == "pass"

    coarse = list(np.linspace(top / 10, top, 10))
    passed = [r for r in coarse if probe(r)]
    low = max(passed) if passed else 0.0
    high = min([r for r in coarse if r > low] or [top])
    fine = list(np.linspace(low, high, 12))[1:-1]
    passed += [r for r in fine if probe(r)]
    return max(passed) if passed else 0.0, probes


def measure(seed: int) -> list[tuple[str, float, list, float]]:
    """Both searches and the sweep on one simulated server with `seed`: (method, answer, probes, wall s) each."""
    truth, slo = capacity(), SLO(ttft_ms=1000 * S)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with Simulated(ttft_ms=0, tpot_ms=1, queue_servers=K, service_ms=1000 / MU, log_dir=Path(tmp),
                       seed=seed) as sim:
            for name, start in (("search @20", 20.0), ("search @top/10", 2 * truth / 10)):
                policy = SearchPolicy(start_rate=start, tolerance=0.05, seed=seed, **POLICY)
                t0 = time.monotonic()
                res = search(sim, items(seed), slo, policy, timeout_s=30)
                rows.append((name, res.goodput, res.probes, time.monotonic() - t0))
            t0 = time.monotonic()
            found, probes = sweep(sim, slo, policy, 2 * truth)
            rows.append(("linear sweep", found, probes, time.monotonic() - t0))
    return rows


def report(seed: int, rows: list[tuple[str, float, list, float]]) -> None:
    truth = capacity()
    print(f"seed {seed}; capacity (closed form): {truth:.1f} req/s")
    print(f"{'method':16} {'answer':>8} {'vs truth':>9} {'probes':>7} {'requests':>9} {'wall s':>7}")
    for name, answer, probes, wall in rows:
        sent = sum(p.sent + sum(r.warmup for r in p.records) for p in probes)
        print(f"{name:16} {answer:8.1f} {answer / truth:9.3f} {len(probes):7d} {sent:9d} {wall:7.1f}")
    for name, _, probes, _ in rows:
        print(f"{name} probes: " + ", ".join(f"{p.rate:.0f} {p.verdict} {p.sent}r {p.wall_s:.1f}s" for p in probes))
    for name, _, probes, wall in rows[:-1]:
        sent = sum(p.sent for p in probes) / sum(p.sent for p in rows[-1][2])
        print(f"{name} / sweep: wall time {wall / rows[-1][3]:.2f} (goal <= 0.33), scored requests {sent:.2f}")
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", help="comma-separated seeds, each measured in turn (about 6 minutes each)")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    runs = {}
    for seed in seeds:
        runs[seed] = measure(seed)
        report(seed, runs[seed])
    if len(seeds) < 2:
        return
    truth = capacity()
    print(f"over seeds {', '.join(map(str, seeds))}:")
    for i, name in enumerate(r[0] for r in runs[seeds[0]]):
        answers = [runs[s][i][1] / truth for s in seeds]
        share = [runs[s][i][3] / runs[s][-1][3] for s in seeds]
        line = f"  {name:16} answer / truth {min(answers):.3f}-{max(answers):.3f}"
        if name != "linear sweep":
            line += f"; wall time / sweep {' '.join(f'{x:.2f}' for x in share)}, mean {np.mean(share):.2f} " \
                    "(goal <= 0.33)"
        print(line)


if __name__ == "__main__":
    main()
