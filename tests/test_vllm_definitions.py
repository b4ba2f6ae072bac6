"""summary.vllm follows vLLM's own definitions exactly: the same records, converted to what vLLM's client would
have recorded, go through vLLM's calculate_metrics (vllm/benchmarks/serve.py), and every key must match ours.
No server and no timing: records with known times, including multi-token chunks, a one-token answer and a failure."""
from __future__ import annotations

import pytest

from ctxkit.collectors.latency import SLO, vllm_metrics
from ctxkit.records import HTTP_ERROR, OK, RequestRecord

MS = 1_000_000


def rec(rid, send_ms, chunks, n_out, status=OK, prompt=100, sched_ms=None):
    """chunks: (ms since 0, tokens in the chunk) for each chunk that carried tokens."""
    times = [int(t * MS) for t, _ in chunks]
    return RequestRecord(rid, prompt, n_out, t_sched_ns=int((sched_ms if sched_ms is not None else send_ms) * MS),
                         t_send_ns=int(send_ms * MS), t_first_ns=times[0] if times else None,
                         t_last_ns=times[-1] if times else None, t_end_ns=int(((times or [send_ms * MS])[-1]) + 2 * MS),
                         chunk_times_ns=times, chunk_tokens=[k for _, k in chunks], n_out=n_out, status=status,
                         usage_prompt_tokens=prompt if status == OK else None)


RECORDS = [
    rec("a", 1000.0, [(1020.0, 1), (1022.5, 1), (1025.0, 1), (1031.0, 1)], 4, sched_ms=999.5),
    rec("b", 1003.0, [(1041.0, 1), (1043.0, 2), (1048.0, 1), (1050.0, 1)], 5, prompt=300),   # a two-token chunk
    rec("c", 1010.0, [(1015.0, 1)], 1, prompt=40),                                           # one token: no TPOT
    rec("d", 1012.0, [], 0, status=HTTP_ERROR),                                              # failed
    rec("e", 1200.0, [(1260.0, 1), (1290.0, 1), (1330.0, 1)], 3, prompt=2000),
    RequestRecord("w", 10, 4, t_send_ns=1, t_first_ns=2, t_last_ns=3, t_end_ns=4, chunk_times_ns=[2, 3],
                  chunk_tokens=[1, 1], n_out=2, warmup=True),                                 # warmup: excluded
]


def vllm_outputs(records):
    """What vLLM's async_request_openai_completions records for each request, from ctxkit's chunk times."""
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput

    outs = []
    for r in records:
        if r.warmup:
            continue
        o = RequestFuncOutput(prompt_len=r.usage_prompt_tokens or r.prompt_tokens, start_time=r.t_send_ns / 1e9)
        if r.status == OK:
            t = [x / 1e9 for x in r.chunk_times_ns]
            o.success, o.output_tokens, o.ttft = True, r.n_out, t[0] - o.start_time
            o.itl = [b - a for a, b in zip(t, t[1:])]
            o.latency = t[-1] - o.start_time
        outs.append(o)
    return outs


@pytest.mark.parametrize("slo", [None, SLO(ttft_ms=50.0, tpot_ms=4.0)], ids=["no-slo", "goodput"])
def test_every_key_matches_vllms_calculate_metrics(slo):
    from vllm.benchmarks.serve import calculate_metrics

    ours = vllm_metrics(RECORDS, slo)
    goodput = {} if slo is None else {"ttft": slo.ttft_ms, "tpot": slo.tpot_ms}
    theirs, _ = calculate_metrics([], vllm_outputs(RECORDS), ours["duration"], None, [50.0, 90.0, 95.0, 99.0],
                                  goodput)
    assert ours["duration"] == pytest.approx((1332.0 - 999.5) / 1000)    # first scheduled send -> last stream end
    pairs = {"completed": theirs.completed, "failed": theirs.failed, "total_input_tokens": theirs.total_input,
             "total_output_tokens": theirs.total_output, "request_throughput": theirs.request_throughput,
             "output_throughput": theirs.output_throughput, "total_token_throughput": theirs.total_token_throughput,
             "max_output_tokens_per_s": theirs.max_output_tokens_per_s,
             "max_concurrent_requests": theirs.max_concurrent_requests}
    if slo is not None:
        pairs["request_goodput"] = theirs.request_goodput
    for metric in ("ttft", "tpot", "itl", "e2el"):
        pairs[f"mean_{metric}_ms"] = getattr(theirs, f"mean_{metric}_ms")
        pairs[f"median_{metric}_ms"] = getattr(theirs, f"median_{metric}_ms")
        pairs[f"std_{metric}_ms"] = getattr(theirs, f"std_{metric}_ms")
        for p, value in getattr(theirs, f"percentiles_{metric}_ms"):
            pairs[f"p{int(p)}_{metric}_ms"] = value
    for key, expected in pairs.items():
        assert ours[key] == pytest.approx(expected, rel=1e-9, abs=1e-9), key
    assert ours["completed"] == 4 and ours["failed"] == 1


def test_where_vllm_and_ctxkit_definitions_differ():
    """ITL: vLLM takes each chunk gap whole, ctxkit splits a k-token chunk's gap into k gaps; duration: vLLM's runs
    from the start of the send loop to the last stream's end, ctxkit's from the first send to the last token."""
    from ctxkit.collectors.latency import summarize

    s = summarize(RECORDS)
    assert s["vllm"]["p50_itl_ms"] is not None
    # chunk gaps: a 3, b 3 (one of them before a 2-token chunk), c 0, e 2; ctxkit counts b's 2-token chunk twice
    assert s["itl_ms"]["count"] == 3 + 4 + 0 + 2
    assert s["itl_ms"]["max"] == pytest.approx(40.0) and s["itl_ms"]["min"] == pytest.approx(1.0)   # 2 ms / 2
    assert s["duration_s"] == pytest.approx((1330.0 - 1000.0) / 1000)
    assert s["vllm"]["duration"] == pytest.approx((1332.0 - 999.5) / 1000)
