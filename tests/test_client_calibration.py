"""The client against ground truth: a simulated server (explicitly allowed) writes when each request's handler
started and when its first and last tokens left; ctxkit's TTFT and TPOT must match those within what the HTTP path
can add. The client's error is measured per request against the server's own clock, so a simulator that runs late
on a busy machine moves both sides alike (the load-sensitive 64-stream figure is benchmarks/calibration.py's)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ctxkit.backends import BackendUnavailable, Simulated
from ctxkit.collectors.latency import request_latency
from ctxkit.load.arrivals import Arrivals, run_load
from ctxkit.load.workloads import LengthDist, synthetic


def test_simulated_backend_refuses_without_opt_in(monkeypatch):
    monkeypatch.delenv("CTXKIT_ALLOW_SIMULATED_BACKEND", raising=False)
    with pytest.raises(BackendUnavailable, match="CTXKIT_ALLOW_SIMULATED_BACKEND=1"):
        Simulated()


def test_client_error_against_the_servers_own_times(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    items = synthetic(96, LengthDist("fixed", 128), LengthDist("uniform", 16, low=8, high=24), vocab_size=4096, seed=0)
    warm = synthetic(8, LengthDist("fixed", 16), LengthDist("fixed", 4), vocab_size=4096, seed=1, id_prefix="w")
    truth_log = tmp_path / "truth.jsonl"
    with Simulated(ttft_ms=30.0, tpot_ms=5.0, log_dir=tmp_path, truth_log=truth_log) as sim:
        assert sim.mode == "simulated" and sim.version()["version"].startswith("simulated")
        records = run_load(sim.base_url, sim.model, items, Arrivals("concurrency", concurrency=16), warmup=warm)
    truth = {row["request_id"]: row for row in map(json.loads, truth_log.read_text().splitlines())}
    measured = [r for r in records if not r.warmup]
    assert len(measured) == 96 and all(r.ok for r in measured)
    ttft_err, tpot_err = [], []
    for rec in measured:
        t, lat = truth[rec.request_id], request_latency(rec)
        server_ttft = (t["t_first_sent_ns"] - t["t_handler_ns"]) / 1e6
        server_tpot = (t["t_last_sent_ns"] - t["t_first_sent_ns"]) / 1e6 / (t["n_out"] - 1)
        assert rec.t_send_ns <= t["t_handler_ns"] and rec.t_first_ns >= t["t_first_sent_ns"]   # one clock
        ttft_err.append(lat.ttft_ms - server_ttft)
        tpot_err.append(lat.tpot_ms - server_tpot)
    # What the client reports beyond the server's own times: request delivery plus reading the first chunk
    # (TTFT), and the difference of two receive delays spread over the tokens (TPOT).
    print("client error p50/p90/p99: TTFT", np.percentile(ttft_err, [50, 90, 99]), "TPOT", np.percentile(tpot_err, [50, 90, 99]))
    assert 0 <= np.median(ttft_err) < 3.0, np.percentile(ttft_err, [50, 90, 99])
    assert abs(np.median(tpot_err)) < 0.1, np.percentile(tpot_err, [50, 90, 99])


def test_a_scheduled_request_is_encoded_before_it_is_due(tmp_path, monkeypatch):
    """A 131,072-token prompt takes milliseconds to encode: on a schedule, each request's body is encoded before
    the client waits for its due time, so the encoding never counts as send lag (and the encoded body is the one
    sent: every request is answered)."""
    from ctxkit.load import arrivals as arrivals_mod
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    events: list[tuple[str, int]] = []
    encode, sleep_until = arrivals_mod.encode, arrivals_mod.sleep_until

    def encoding(model, req):
        events.append(("encode", req.t_sched_ns))
        return encode(model, req)

    async def waiting(due_ns):
        events.append(("wait", due_ns))
        await sleep_until(due_ns)
    monkeypatch.setattr(arrivals_mod, "encode", encoding)
    monkeypatch.setattr(arrivals_mod, "sleep_until", waiting)
    items = synthetic(12, LengthDist("fixed", 64), LengthDist("fixed", 4), vocab_size=4096, seed=0)
    with Simulated(ttft_ms=1.0, tpot_ms=1.0, log_dir=tmp_path) as sim:
        records = run_load(sim.base_url, sim.model, items, Arrivals("poisson", 50.0, seed=3))
    assert len(records) == 12 and all(r.ok for r in records)
    assert events[0::2] == [("encode", r.t_sched_ns) for r in sorted(records, key=lambda r: r.t_sched_ns)]
    assert [kind for kind, _ in events] == ["encode", "wait"] * 12
    assert all(e[1] == w[1] for e, w in zip(events[0::2], events[1::2]))   # each encoded before its own wait
