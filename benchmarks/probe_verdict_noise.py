"""How often a single probe of the goodput search gets the wrong verdict from queueing noise alone.

    python benchmarks/probe_verdict_noise.py [--trials 300]

A discrete-event simulation of the bare FCFS M/M/K queue (no HTTP, no clock, no CPU load): Poisson arrivals from an
empty queue, a warmup, then a probe's scored window; the share of TTFTs within the objective in that window against
the target, at 0.9x and 1.1x the closed-form capacity. Compares the known-capacity test's old queue (220 ms
objective: a shallow knee) with the one it uses (tests/test_goodput_search.py), at that test's probe sizes.
"""
from __future__ import annotations

import argparse
import heapq

import numpy as np

from ctxkit.plan.queueing import mmk_attainment, mmk_capacity  # noqa: E402


def window(k: int, mu: float, s: float, lam: float, n_warm: int, n: int, rng: np.random.Generator) -> float:
    arrivals = np.cumsum(rng.exponential(1 / lam, n_warm + n))
    service = rng.exponential(1 / mu, n_warm + n)
    free, met = [0.0] * k, 0
    for i in range(n_warm + n):
        end = max(arrivals[i], heapq.heappop(free)) + service[i]
        heapq.heappush(free, end)
        met += i >= n_warm and end - arrivals[i] <= s
    return met / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for label, k, mu, s, t, warm_s, score_s, min_n in (("old: 220 ms objective", 8, 12.5, 0.22, 0.9, 3, 2, 100),
                                                       ("new: 300 ms objective", 8, 12.5, 0.30, 0.9, 6, 4, 300)):
        c = mmk_capacity(t, k, mu, s)
        for f in (0.9, 1.1):
            lam = f * c
            n_warm, n = max(20, int(lam * warm_s)), max(min_n, int(lam * score_s * 1.2))
            shares = np.array([window(k, mu, s, lam, n_warm, n, rng) for _ in range(args.trials)])
            wrong = (shares < t).mean() if f < 1 else (shares >= t).mean()
            print(f"{label}: capacity {c:.1f} req/s; at {f}x: steady state {mmk_attainment(lam, k, mu, s):.3f}, "
                  f"probe of {n} after {n_warm}: mean {shares.mean():.3f} sd {shares.std():.3f}, wrong verdict "
                  f"{100 * wrong:.1f}%")


if __name__ == "__main__":
    main()
