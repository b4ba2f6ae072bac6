"""What a goodput probe's stop rule costs before each send, as the probe grows: ctxkit.load.search.StopRule (each
finished request counted once, when it first appears) against a tally of every record so far at every check (the
rule as it was), on the same records, measured in the same run.

    python benchmarks/stop_rule_cost.py [--sizes 100,1000,5000] [--max-output 256] [--checks 16]

The records look like a long-context probe on a GPU: each one's output (10 to --max-output tokens, seeded) streamed
one token a chunk, every one meeting the SLO (the rule's steady-state check reruns as the count grows, as on a
passing probe). For each size the rule is first fed the records one at a time, as the client holds them, then
asked --checks more times, as before each row of a burst due at once. Prints ms a check at each size for both: the
rule's must not grow with the probe.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctxkit.collectors import attainment as att  # noqa: E402
from ctxkit.collectors.latency import SLO  # noqa: E402
from ctxkit.load import search  # noqa: E402
from ctxkit.records import RequestRecord  # noqa: E402

MS = 1_000_000
SLO_ = SLO(ttft_ms=5000, tpot_ms=100)


def records(n: int, max_output: int, seed: int = 0) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(10, max_output + 1))
        send = 10**12 + i * 10 * MS
        chunks = [send + 500 * MS + j * 20 * MS for j in range(k)]
        out.append(RequestRecord(f"r{i}", 4096, k, t_sched_ns=send, t_send_ns=send, t_first_ns=chunks[0],
                                 t_last_ns=chunks[-1], t_end_ns=chunks[-1] + 1, chunk_times_ns=chunks,
                                 chunk_tokens=[1] * k, n_out=k))
    return out


def ms_a_check(recs: list[RequestRecord], checks: int, whole: bool) -> float:
    """ms a check once `recs` have finished: the rule (fed them one by one first), or a tally of all of them."""
    policy = search.SearchPolicy(min_requests=10**9, max_requests=10**9)     # never stops: every check runs in full
    rule = search.StopRule(SLO_, policy, 10**9)
    done: list[RequestRecord] = []
    if not whole:
        for rec in recs:
            done.append(rec)
            rule(done, [], rec.t_end_ns)
    now = recs[-1].t_end_ns
    t0 = time.perf_counter()
    for _ in range(checks):
        if whole:
            att.tally(recs, SLO_, now)
        else:
            rule(done, [], now)
    return (time.perf_counter() - t0) / checks * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--checks", type=int, default=16)
    a = ap.parse_args()
    print(f"outputs 10-{a.max_output} tokens, {a.checks} checks at each size")
    print(f"{'finished':>9} {'StopRule ms':>12} {'tally of all, ms':>16}")
    for n in map(int, a.sizes.split(",")):
        recs = records(n, a.max_output)
        print(f"{n:9d} {ms_a_check(recs, a.checks, False):12.3f} {ms_a_check(recs, a.checks, True):16.2f}")


if __name__ == "__main__":
    main()
