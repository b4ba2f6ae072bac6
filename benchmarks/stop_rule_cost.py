"""What a goodput probe's stop rule costs before each send: the rule with each finished request's latencies computed
once (ctxkit.load.search.finished_latency_memo) against the same rule recomputing them at every check, on the same
records, measured in the same run.

    python benchmarks/stop_rule_cost.py [--records 60] [--max-output 900] [--checks 16]

The records look like a long-context probe on a GPU: each one's output (10 to --max-output tokens, seeded) streamed
one token a chunk. The rule runs --checks times, as before each row of a burst of that many rows due at once (a
burst's rows go out one after another, each after a check). Prints ms a check for both and their ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctxkit.collectors.latency import SLO, request_latency  # noqa: E402
from ctxkit.load import search  # noqa: E402
from ctxkit.records import RequestRecord  # noqa: E402

MS = 1_000_000


def records(n: int, max_output: int, seed: int = 0) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(10, max_output + 1))
        send = 10**12 + i * 100 * MS
        chunks = [send + 500 * MS + j * 20 * MS for j in range(k)]
        out.append(RequestRecord(f"r{i}", 5000, k, t_sched_ns=send, t_send_ns=send, t_first_ns=chunks[0],
                                 t_last_ns=chunks[-1], t_end_ns=chunks[-1] + 1, chunk_times_ns=chunks,
                                 chunk_tokens=[1] * k, n_out=k))
    return out


def ms_a_check(recs: list[RequestRecord], checks: int, memo: bool) -> float:
    saved = search.finished_latency_memo
    if not memo:     # the rule as it was: every check recomputes every record's latencies
        search.finished_latency_memo = lambda: request_latency
    try:
        stop = search._rule(SLO(ttft_ms=5000, tpot_ms=100), search.SearchPolicy(min_requests=30), len(recs))
        now = recs[-1].t_end_ns
        t0 = time.perf_counter()
        for _ in range(checks):
            stop(recs, [], now)
        return (time.perf_counter() - t0) / checks * 1000
    finally:
        search.finished_latency_memo = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=60)
    ap.add_argument("--max-output", type=int, default=900)
    ap.add_argument("--checks", type=int, default=16)
    a = ap.parse_args()
    recs = records(a.records, a.max_output)
    before, after = ms_a_check(recs, a.checks, memo=False), ms_a_check(recs, a.checks, memo=True)
    print(f"{a.records} finished records, outputs 10-{a.max_output} tokens, {a.checks} checks")
    print(f"recomputing at every check: {before:.2f} ms a check ({before * a.checks:.0f} ms for the burst)")
    print(f"computed once a record:     {after:.2f} ms a check ({after * a.checks:.0f} ms for the burst)")
    print(f"ratio: {before / after:.0f}x")


if __name__ == "__main__":
    main()
