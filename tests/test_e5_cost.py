"""E5's cost-of-context fits on rows whose generating terms are known (no server)."""
from __future__ import annotations

import pytest

from ctxkit.experiments.e5_cost import fit, steady
from ctxkit.records import RequestRecord


def rows(a=5.0, b=0.02, c=3e-5, d=1.5, e_per_gb=400.0):
    out = []
    for length in (128, 512, 1024, 1984):
        for batch in (1, 4):
            kv = batch * (length + 16) * 2048
            tpot = d + e_per_gb * kv / 1e9
            # a batch's whole-request TPOT carries the other requests' prefills; its steady TPOT is the decode's
            out.append({"context_len": length, "batch": batch, "p50_ttft_ms": a + b * length + c * length ** 2,
                        "p50_tpot_ms": tpot + (250.0 if batch > 1 else 0.0), "p50_tpot_steady_ms": tpot,
                        "steady_running": float(batch), "kv_bytes_per_step": kv})
    out[-1]["steady_running"] = 2.0     # two of the four still decoding: the step read half the batch's KV
    out[-1]["p50_tpot_steady_ms"] = d + e_per_gb * out[-1]["kv_bytes_per_step"] / 2 / 1e9
    return out


def test_fit_recovers_the_terms_that_made_the_rows():
    f = fit(rows())
    t, p = f["ttft"], f["tpot"]
    assert (t["a_ms"], t["b_ms_per_token"], t["c_ms_per_token2"]) == pytest.approx((5.0, 0.02, 3e-5), rel=1e-6)
    assert t["r2"] == pytest.approx(1.0) and t["longest"] == 1984
    share = 3e-5 * 1984 ** 2 / (5.0 + 0.02 * 1984 + 3e-5 * 1984 ** 2)
    assert t["quadratic_share_at_longest"] == pytest.approx(share)
    assert (p["d_ms"], p["e_ms_per_gb"]) == pytest.approx((1.5, 400.0), rel=1e-6)
    assert p["kv_read_gb_per_s"] == pytest.approx(1000 / 400.0)       # 400 ms per GB: 2.5 GB/s


def test_too_few_lengths_give_no_ttft_fit():
    two = [r for r in rows() if r["context_len"] in (128, 512)]
    assert fit(two)["ttft"] is None and fit(two)["tpot"] is not None


def record(rid: str, times_ms: list[float], tokens: list[int] | None = None) -> RequestRecord:
    ns = [int(t * 1e6) for t in times_ms]
    return RequestRecord(rid, 100, len(ns), t_first_ns=ns[0], t_last_ns=ns[-1], chunk_times_ns=ns,
                         chunk_tokens=tokens or [1] * len(ns))


def test_steady_tpot_counts_only_the_steps_after_the_last_first_token():
    """A decodes slowly while B prefills (a step every 50 ms), then both step every 10 ms: steady TPOT 10 ms, where
    A's whole-request TPOT is 26 ms; both decode through the whole window."""
    a = record("a", [0, 50, 100, 110, 120, 130])
    b = record("b", [100, 110, 120, 130])
    assert steady([a, b]) == pytest.approx((10.0, 2.0))
    assert steady([record("alone", [0])]) == (None, None)       # no two chunks after the last first token


def test_steady_tpot_starts_after_the_catch_up_chunk():
    """The first chunk reached the client late (it carried the prompt's ids): the next holds 5 tokens 10 ms later.
    A step every 10 ms; counting from the first token would say 30 ms / 7 tokens = 4.3 ms."""
    assert steady([record("c", [0, 10, 20, 30], [1, 5, 1, 1])]) == pytest.approx((10.0, 1.0))


def test_a_finished_request_thins_the_steady_window():
    """A ends 10 ms into the 20 ms window: 1.5 requests decoding on average."""
    a = record("a", [0, 5, 15, 20])
    b = record("b", [8, 10, 20, 30])
    assert steady([a, b])[1] == pytest.approx(1.5)
