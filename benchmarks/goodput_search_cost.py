"""What the goodput search costs against a linear rate sweep that reaches the same resolution.

    python benchmarks/goodput_search_cost.py [--seed 0] [--seeds 0,1,2]     # live: about 6 minutes a seed
    python benchmarks/goodput_search_cost.py --virtual --seeds 0-99          # virtual clock: about 5 s a seed
    ... --scout-warmup-share 1                                               # scouts warm up in full

A simulated server with a capacity known in closed form (8 FCFS prefill slots, exponential 80 ms service: an M/M/8
queue; 90% of TTFTs within 300 ms up to lambda* = 89.1 req/s; the test's queue, tests/test_goodput_search.py). Both
methods use the same probes (the same Poisson streams, Wilson verdicts, steady-state checks). The search brackets
by doubling with scouts (probes that may pass on 40 requests after a third of the warmup) and narrows to 5% with
full probes, once from 20 req/s (a start far below capacity, as a user without a guess would pick) and once from
the sweep's own lowest level. The sweep, in the style of vLLM's serve workload sweeps, probes 10 evenly spaced
rates up to twice the capacity (an informed range: it favours the sweep), then 10 evenly spaced rates between the
last pass and the first fail, a resolution of about 2% of the range; its answer is the highest level that passed.

Prints each method's answer, probes, requests and wall time, and the search's share of the sweep's wall time. With
--seeds, once per seed (other Poisson streams and service times), then over the seeds: each method's answers
against the capacity and against the sweep's on the same seed, the search's mean share of the sweep's time with a
95% interval, and where each method's time went (scouts, full passes, full fails). One seed's share moves by about
0.1 with the probes that land near the knee, so the goal is judged on the mean over many seeds: --virtual runs the
same search code on the queue's virtual clock (benchmarks/virtual_queue.py: the same streams and service times,
without the live run's own noise), where 100 seeds take minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")

from evidence import code_state, record  # noqa: E402
from virtual_queue import VirtualQueue, items  # noqa: E402

from ctxkit.backends import Simulated  # noqa: E402
from ctxkit.collectors.latency import SLO  # noqa: E402
from ctxkit.load.search import SearchPolicy, goodput_interval, run_probe, search  # noqa: E402
from ctxkit.plan.queueing import REFERENCE  # noqa: E402

K, MU, S, TARGET, capacity = REFERENCE.k, REFERENCE.mu, REFERENCE.s, REFERENCE.target, REFERENCE.capacity

POLICY = dict(target=TARGET, min_requests=300, max_requests=600, warmup_requests=20, warmup_s=6.0, min_duration_s=4.0,
              max_probes=30)


def sweep(sim, slo: SLO, policy: SearchPolicy, top: float) -> tuple[float, list]:
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


Row = tuple[str, float, list, float, tuple[float, Optional[float]], str]


def methods(sim, seed: int, clock: Callable[[], float], share: float, sizes: dict) -> list[Row]:
    """Both searches (scouts warming up for `share` of warmup_s) and the sweep on one server: (method, answer,
    probes, seconds on `clock`, 90% interval on the goodput, the repeat check's finding) each. The sweep's interval
    inverts its own probes' bounds the same way (search.goodput_interval)."""
    truth, slo = capacity(), SLO(ttft_ms=1000 * S)
    sizes = dict(sizes)
    with_sweep = sizes.pop("sweep", True)
    tolerance = sizes.pop("tolerance", 0.05)
    rows = []
    for name, start in (("search @20", 20.0), ("search @top/10", 2 * truth / 10)):
        policy = SearchPolicy(start_rate=start, tolerance=tolerance, seed=seed, scout_warmup_share=share,
                              **(POLICY | sizes))
        t0 = clock()
        res = search(sim, items(seed), slo, policy, timeout_s=30)
        rows.append((name, res.goodput, res.probes, clock() - t0, (res.interval_low, res.interval_high),
                     res.repeat or "not run"))
    if with_sweep:
        t0 = clock()
        found, probes = sweep(sim, slo, policy, 2 * truth)
        rows.append(("linear sweep", found, probes, clock() - t0, goodput_interval(probes, TARGET, found),
                     "not run"))
    return rows


def measure(seed: int, share: float, sizes: dict) -> list[Row]:
    """The three methods on one live simulated server with `seed`, timed by the wall clock."""
    with tempfile.TemporaryDirectory() as tmp:
        with Simulated(ttft_ms=0, tpot_ms=1, queue_servers=K, service_ms=1000 / MU, log_dir=Path(tmp),
                       seed=seed) as sim:
            return methods(sim, seed, time.monotonic, share, sizes)


def measure_virtual(seed: int, share: float, sizes: dict) -> list[Row]:
    """The same on the queue's virtual clock (benchmarks/virtual_queue.py): the same streams and service times,
    without the live run's own noise, in seconds of CPU."""
    queue = VirtualQueue(K, 1000 / MU, seed)
    with queue.patched():
        return methods(queue, seed, lambda: queue.elapsed_s, share, sizes)


def report(seed: int, rows: list[Row]) -> None:
    truth = capacity()
    print(f"seed {seed}; capacity (closed form): {truth:.1f} req/s")
    print(f"{'method':16} {'answer':>8} {'vs truth':>9} {'90% interval':>14} {'probes':>7} {'requests':>9} "
          f"{'wall s':>7}  repeat check")
    for name, answer, probes, wall, (lo, hi), repeat in rows:
        sent = sum(p.sent + sum(r.warmup for r in p.records) for p in probes)
        print(f"{name:16} {answer:8.1f} {answer / truth:9.3f} {lo:6.1f}-{hi or float('inf'):<7.1f} {len(probes):7d} "
              f"{sent:9d} {wall:7.1f}  {repeat}")
    for name, _, probes, *_ in rows:
        print(f"{name} probes: " + ", ".join(f"{p.rate:.0f} {p.verdict} {p.sent}r {p.wall_s:.1f}s" for p in probes))
    for name, _, probes, wall, *_ in (rows[:-1] if rows[-1][0] == "linear sweep" else []):
        sent = sum(p.sent for p in probes) / sum(p.sent for p in rows[-1][2])
        print(f"{name} / sweep: wall time {wall / rows[-1][3]:.2f} (goal <= 0.33), scored requests {sent:.2f}")
    print(flush=True)


def seed_list(text: str) -> list[int]:
    """'0,1,2' or '0-99' (or both: '0-9,20')."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def summarize(runs: dict[int, list], label: str) -> None:
    """Over seeds: each method's answers against the capacity and against the sweep's on the same seed, and each
    search's share of the sweep's time, its mean with a 95% interval (normal, over seeds)."""
    truth, seeds = capacity(), list(runs)
    print(f"over {len(seeds)} seeds ({label}):")
    for i, name in enumerate(r[0] for r in runs[seeds[0]]):
        answers = np.array([runs[s][i][1] / truth for s in seeds])
        line = (f"  {name:16} answer / truth median {np.median(answers):.3f}, 10-90% {np.percentile(answers, 10):.3f}-"
                f"{np.percentile(answers, 90):.3f}, median error {np.median(abs(answers - 1)):.3f}, within 5%: "
                f"{np.mean(abs(answers - 1) <= 0.05):.2f} of seeds")
        if name != "linear sweep" and runs[seeds[0]][-1][0] == "linear sweep":
            same = np.mean([abs(runs[s][i][1] / runs[s][-1][1] - 1) <= 0.05 for s in seeds if runs[s][-1][1]])
            share = np.array([runs[s][i][3] / runs[s][-1][3] for s in seeds])
            half = 1.96 * share.std(ddof=1) / np.sqrt(len(share)) if len(share) > 1 else float("nan")
            line += (f"; within 5% of the sweep's: {same:.2f}\n  {'':16} time / sweep mean {share.mean():.3f} "
                     f"+- {half:.3f}, median {np.median(share):.3f}, <= 1/3 in {np.mean(share <= 1 / 3):.2f} of seeds "
                     f"(goal <= 0.33)")
        print(line)
        print(f"  {'':16} {coverage([runs[s][i] for s in seeds], truth)}")
        print(f"  {'':16} {mix([runs[s][i][2] for s in seeds])}")


def coverage(rows: list[Row], truth: float) -> str:
    """How often the 90% interval holds the closed-form capacity (goal: 88 of 100 seeds), its median width as a
    share of the answer (goal <= 0.15), and where it missed; for the searches, how often the repeat check held."""
    inside = sum(lo <= truth <= (hi if hi is not None else math.inf) for _, _, _, _, (lo, hi), _ in rows)
    above = sum(lo > truth for _, _, _, _, (lo, _), _ in rows)
    width = [((hi if hi is not None else math.inf) - lo) / answer if answer else math.inf
             for _, answer, _, _, (lo, hi), _ in rows]
    repeated = [r for *_, r in rows if r != "not run"]
    return (f"90% interval covers the capacity in {inside} of {len(rows)} seeds (goal >= 0.88 of them; low end above "
            f"it in {above}), median width / answer {np.median(width):.3f} (goal <= 0.15)" +
            (f"; repeat check held in {sum(r == 'repeated' for r in repeated)} of {len(repeated)}" if repeated else ""))


def mix(searches: list[list]) -> str:
    """Where a method's time goes, on the mean over seeds: its probes by kind (count and seconds)."""
    kinds = {"scouts": lambda p: p.scout, "full passes": lambda p: not p.scout and p.verdict == "pass",
             "full fails": lambda p: not p.scout and p.verdict != "pass"}
    parts = []
    for name, kind in kinds.items():
        n = np.mean([sum(1 for p in probes if kind(p)) for probes in searches])
        wall = np.mean([sum(p.wall_s for p in probes if kind(p)) for probes in searches])
        parts.append(f"{name} {n:.1f} ({wall:.0f} s)")
    return "probes, mean a search: " + ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", help="seeds measured in turn: 0,1,2 or 0-99 (live: about 6 minutes each)")
    ap.add_argument("--virtual", action="store_true",
                    help="on the queue's virtual clock (benchmarks/virtual_queue.py), about 5 s of CPU a seed")
    ap.add_argument("--scout-warmup-share", type=float, default=SearchPolicy.scout_warmup_share,
                    help="the searches' scouts warm up for this share of warmup_s (1: the full warmup)")
    ap.add_argument("--warmup-s", type=float, default=POLICY["warmup_s"], help="each probe's unscored head, seconds")
    ap.add_argument("--min-duration-s", type=float, default=POLICY["min_duration_s"],
                    help="each full probe scores requests for at least this long")
    ap.add_argument("--no-repeat-check", action="store_true", help="searches end without measuring their ends again")
    ap.add_argument("--tolerance", type=float, default=0.05, help="the searches narrow their bracket to this")
    ap.add_argument("--record", type=Path, help="also write the summary over the seeds to this markdown file, with "
                    "the command and the commit it ran at")
    ap.add_argument("--no-sweep", action="store_true",
                    help="the searches alone (no cost ratio): long probes make the sweep's overloaded ones slow to model")
    args = ap.parse_args()
    code = code_state()
    seeds = seed_list(args.seeds) if args.seeds else [args.seed]
    sizes = dict(warmup_s=args.warmup_s, min_duration_s=args.min_duration_s, repeat_check=not args.no_repeat_check,
                 tolerance=args.tolerance)
    runs = {}
    for seed in tqdm(seeds, desc="seeds", disable=not args.virtual or len(seeds) < 2):
        runs[seed] = (measure_virtual if args.virtual else measure)(seed, args.scout_warmup_share,
                                                                    sizes | {"sweep": not args.no_sweep})
        if not args.virtual or len(seeds) < 2:
            report(seed, runs[seed])
    if len(seeds) > 1:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            summarize(runs, f"{'virtual clock' if args.virtual else 'live simulated server'}, scouts' warmup "
                        f"{args.scout_warmup_share:.2f} of warmup_s, warmup_s {args.warmup_s:g}, min_duration_s "
                        f"{args.min_duration_s:g}, repeat check {'off' if args.no_repeat_check else 'on'}, tolerance "
                        f"{args.tolerance:g}")
        print(out.getvalue(), end="")
        if args.record:
            record(args.record, out.getvalue(), code)


if __name__ == "__main__":
    main()
