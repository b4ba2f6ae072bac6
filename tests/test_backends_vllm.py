"""The managed vLLM backend against a real vLLM CPU server (shared by the session)."""
from __future__ import annotations

import time

import pytest

from ctxkit.backends import BackendError, BackendUnavailable, Endpoint, ServerDied, VLLMServer
from ctxkit.collectors.latency import request_latency
from ctxkit.records import HTTP_ERROR

pytestmark = pytest.mark.vllm


def test_generate_streams_chunks_with_times_and_token_ids(vllm_server):
    rec = vllm_server.generate(list(range(20, 120)), 12, request_id="t-gen")
    assert rec.ok, rec.error
    assert rec.n_out == 12 and len(rec.output_token_ids) == 12
    assert sum(rec.chunk_tokens) == 12 and len(rec.chunk_times_ns) == len(rec.chunk_tokens)
    assert rec.t_send_ns < rec.t_first_ns <= rec.t_last_ns <= rec.t_end_ns
    assert rec.chunk_times_ns == sorted(rec.chunk_times_ns)
    assert rec.usage_prompt_tokens == 100               # token-id prompt: exact length
    lat = request_latency(rec)
    assert lat.ttft_ms > 0 and lat.tpot_ms > 0


def test_greedy_is_deterministic_on_one_server(vllm_server):
    a = vllm_server.generate(list(range(200, 260)), 8)
    b = vllm_server.generate(list(range(200, 260)), 8)
    assert a.output_token_ids == b.output_token_ids


def test_prefill_is_one_token(vllm_server):
    rec = vllm_server.prefill(list(range(30, 90)))
    assert rec.ok and rec.n_out == 1 and rec.t_first_ns is not None


def test_metrics_and_version(vllm_server):
    text = vllm_server.metrics()
    assert "vllm:prompt_tokens_total" in text and "vllm:time_to_first_token_seconds" in text
    assert vllm_server.version()["version"].startswith("0.")
    assert vllm_server.describe()["mode"] == "real"


def test_too_long_prompt_is_an_http_error_record(vllm_server):
    rec = vllm_server.generate([5] * 4100, 4)
    assert rec.status == HTTP_ERROR and rec.http_status == 400 and "context length" in rec.error.lower()


def test_endpoint_attaches_to_a_running_server(vllm_server):
    ep = Endpoint(vllm_server.base_url + "/v1").start()
    assert ep.model == "tiny-llama" and ep.mode == "real"
    assert ep.generate([1, 2, 3, 4, 5], 3).n_out == 3
    with pytest.raises(BackendError, match="does not serve"):
        Endpoint(vllm_server.base_url, model="other").start()


def test_unreachable_endpoint_is_a_clear_error():
    from ctxkit.backends.process import free_port
    with pytest.raises(BackendError, match="unreachable"):
        Endpoint(f"http://127.0.0.1:{free_port()}").start()


def test_missing_vllm_fails_before_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_VLLM_PYTHON", "/usr/bin/env")     # not a Python with vLLM
    server = VLLMServer("tiny-llama", log_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="vllm"):
        server.start()
    assert server.proc is None


def test_server_that_dies_at_start_fails_fast_quoting_its_log(tmp_path):
    t0 = time.monotonic()
    server = VLLMServer("tiny-llama", log_dir=tmp_path, extra_args=["--no-such-flag"], name="dies")
    with pytest.raises(ServerDied) as err:
        server.start()
    assert time.monotonic() - t0 < 60
    assert "exited with code" in str(err.value) and "no-such-flag" in str(err.value)
    assert server.proc is None
