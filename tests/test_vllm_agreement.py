"""Agreement with the field: `ctxkit bench` and vLLM's own client (vllm.benchmarks.serve), alternating, on the
same workload against the same real vLLM CPU server: random 256 in / 32 out, 40 prompts, Poisson 4 req/s, seed 0.
Completed counts equal; median TTFT and median TPOT within 15% of each other."""
from __future__ import annotations

import json
import statistics

import pytest

from ctxkit.load.vllm_peer import vllm_bench_serve
from ctxkit.models import ModelCard

from conftest import run_cli

pytestmark = pytest.mark.vllm

WORKLOAD = dict(input_len=256, output_len=32, num_prompts=40, request_rate=4.0, seed=0)


def ctxkit_bench(server, runs_dir):
    result = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", server.base_url, "--model", "tiny-llama",
                     "--dataset-name", "random", "--random-input-len", "256", "--random-output-len", "32",
                     "--num-prompts", "40", "--request-rate", "4", "--seed", "0", "--warmup", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    run = result.stdout.strip().splitlines()[-1]
    return json.loads(open(f"{run}/summary.json").read())


def assert_summary_has_both_views(summary):
    lat = summary["profiling"]["latency"]
    assert lat["ttft_ms"]["p50"] > 0 and lat["completed"] == 40             # ctxkit's names
    for key in ("completed", "request_throughput", "output_throughput", "mean_ttft_ms", "median_tpot_ms",
                "p99_itl_ms", "median_e2el_ms"):
        assert summary["vllm"][key] is not None, key                        # vLLM's names
    (server,) = summary["profiling"]["server"].values()                     # server-side deltas of the window
    assert server["prompt_tokens"] == 40 * 256 and server["generation_tokens"] == 40 * 32
    assert server["ttft_count"] == 40 and server["mean_ttft_ms"] > 0


def test_bench_starts_its_own_backend_from_a_profile(runs_dir):
    result = run_cli("--runs-dir", str(runs_dir), "bench", "-p", "cpu-tiny", "--num-prompts", "8",
                     "--random-input-len", "128", "--random-output-len", "8", "--concurrency", "4",
                     "--metrics-interval", "0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    run = result.stdout.strip().splitlines()[-1]
    summary = json.loads(open(f"{run}/summary.json").read())
    assert summary["backend"]["mode"] == "real" and summary["backend"]["version"]["version"].startswith("0.")
    assert summary["profiling"]["latency"]["completed"] == 8 and summary["vllm"]["completed"] == 8
    assert summary["profiling"]["server"]["bench-server"]["generation_tokens"] == 8 * 8
    assert "[bench] 8/8 requests" in result.stderr                          # progress on screen


def test_ctxkit_agrees_with_vllm_bench(vllm_server, runs_dir):
    # One warm-up pass of each client first (never compared), then two alternating rounds.
    tokenizer = str(ModelCard.load("tiny-llama").path)
    peer = lambda: vllm_bench_serve(vllm_server.base_url, "tiny-llama", tokenizer, **WORKLOAD)  # noqa: E731
    first = ctxkit_bench(vllm_server, runs_dir)
    assert_summary_has_both_views(first)
    ours, theirs = [], []
    for _ in range(2):
        ours.append(ctxkit_bench(vllm_server, runs_dir)["vllm"])
        theirs.append(peer())
    for o, t in zip(ours, theirs):
        assert o["completed"] == t["completed"] == 40
    for key in ("median_ttft_ms", "median_tpot_ms"):
        a = statistics.mean(o[key] for o in ours)
        b = statistics.mean(t[key] for t in theirs)
        print(f"{key}: ctxkit {a:.2f} ms, vLLM {b:.2f} ms ({100 * (a - b) / b:+.1f}%)")   # shown with -s
        assert abs(a - b) <= 0.15 * max(a, b), f"{key}: ctxkit {a:.2f} vs vLLM {b:.2f} ({ours}, {theirs})"
