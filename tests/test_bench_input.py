"""`ctxkit bench`: bad input fails before the first request, naming what is wrong; workloads are token-exact."""
from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest

from ctxkit.backends.process import free_port
from ctxkit.load.arrivals import ArrivalError, Arrivals
from ctxkit.load.workloads import LengthDist, WorkloadError, from_trace, synthetic

from conftest import run_cli


@pytest.fixture
def not_openai():
    """An HTTP server that is not OpenAI-compatible (404 everywhere)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("args, needle", [
    (["--dataset-name", "imagenet"], "invalid choice: 'imagenet'"),
    (["--request-rate", "0"], "load.request_rate must be > 0"),
    (["--request-rate", "-3"], "load.request_rate must be > 0"),
    (["--random-input-len", "5000"], "exceeds server.max_model_len 4096"),
    (["--dataset-name", "trace", "--dataset-path", "/nonexistent/trace.jsonl"], "no such file: /nonexistent/trace.jsonl"),
    (["--dataset-name", "trace"], "workload.dataset_path: dataset=trace needs a file"),
    (["--goodput", "ttft"], "expected ttft:MS"),
    (["--max-concurrency", "0"], "load.max_concurrency must be >= 1"),
])
def test_bad_input_is_refused_before_anything_starts(runs_dir, args, needle):
    result = run_cli("--runs-dir", str(runs_dir), "bench", *args, timeout=120)
    assert result.returncode == 2
    assert needle in result.stderr, result.stderr[-2000:]
    assert not any(runs_dir.iterdir())                    # no run folder, no server


def test_unreachable_and_non_openai_endpoints(runs_dir, not_openai):
    gone = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 2 and "unreachable" in gone.stderr
    other = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", not_openai)
    assert other.returncode == 2 and "not OpenAI-compatible" in other.stderr
    assert not any(runs_dir.iterdir())


def test_synthetic_lengths_are_exact_and_seeded():
    a = synthetic(50, LengthDist("uniform", 100, low=50, high=150), LengthDist("fixed", 8), vocab_size=4096, seed=3)
    b = synthetic(50, LengthDist("uniform", 100, low=50, high=150), LengthDist("fixed", 8), vocab_size=4096, seed=3)
    assert [x.prompt for x in a] == [x.prompt for x in b]
    assert all(50 <= len(x.prompt) <= 150 and x.max_tokens == 8 for x in a)
    assert all(16 <= t < 4096 for x in a for t in x.prompt)
    for kind in ("normal", "lognormal"):
        lens = LengthDist(kind, 200, 50, high=300).sample(np.random.default_rng(0), 2000)
        assert 180 < lens.mean() < 220 and lens.min() >= 1 and lens.max() <= 300


def test_shared_prefix_groups():
    items = synthetic(6, LengthDist("fixed", 10), LengthDist("fixed", 4), vocab_size=4096, seed=0,
                      prefix_len=64, num_prefixes=2)
    assert all(len(x.prompt) == 74 for x in items)
    assert items[0].prompt[:64] == items[2].prompt[:64] != items[1].prompt[:64]
    assert items[0].prompt[64:] != items[2].prompt[64:]


def test_trace_replay(tmp_path):
    trace = tmp_path / "t.jsonl"
    rows = [{"timestamp": 1000, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]},
            {"timestamp": 1250, "input_length": 700, "output_length": 7, "hash_ids": [1, 3]}]
    trace.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = from_trace(trace, vocab_size=4096)
    assert [len(i.prompt) for i in items] == [600, 700] and [i.max_tokens for i in items] == [5, 7]
    assert items[0].prompt[:512] == items[1].prompt[:512]             # hash id 1: the same 512-token block
    assert items[0].prompt[512:600] != items[1].prompt[512:600]
    assert Arrivals("trace").offsets_s(items) == [0.0, 0.25]
    trace.write_text('{"timestamp": 1}\n')
    with pytest.raises(WorkloadError, match="not a trace row"):
        from_trace(trace, vocab_size=4096)


def test_arrival_schedules():
    items = synthetic(2000, LengthDist("fixed", 4), LengthDist("fixed", 2), vocab_size=4096, seed=0)
    const = Arrivals("constant", 10.0).offsets_s(items)
    assert const[:3] == [0.0, 0.1, 0.2]
    pois = np.diff(Arrivals("poisson", 10.0, seed=1).offsets_s(items))
    assert abs(pois.mean() - 0.1) < 0.01 and abs(pois.std() - 0.1) < 0.015        # exponential gaps
    bursty = np.diff(Arrivals("gamma", 10.0, burstiness=0.25, seed=1).offsets_s(items))
    assert abs(bursty.mean() - 0.1) < 0.02 and bursty.std() > 1.5 * pois.std()      # burstier than Poisson
    for bad in (Arrivals("poisson", 0.0), Arrivals("gamma", 1.0, burstiness=0), Arrivals("concurrency", concurrency=0),
                Arrivals("nope")):
        with pytest.raises(ArrivalError):
            bad.check()


def test_sharegpt_lengths_come_from_the_conversations(tmp_path):
    from tokenizers import Tokenizer

    from ctxkit.load.workloads import from_sharegpt
    from ctxkit.models import ModelCard
    card = ModelCard.load("tiny-llama")
    data = [{"conversations": [{"from": "human", "value": f"question {i}: " + "why is the sky blue? " * (i + 2)},
                               {"from": "gpt", "value": "because of Rayleigh scattering. " * (i + 1)}]}
            for i in range(6)] + [{"conversations": [{"from": "human", "value": "too short"}]}]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    items = from_sharegpt(path, card.path / "tokenizer.json", vocab_size=card.vocab_size, num=4, seed=0)
    tok = Tokenizer.from_file(str(card.path / "tokenizer.json"))
    assert len(items) == 4
    for it in items:
        i = next(k for k, d in enumerate(data[:6]) if tok.encode(d["conversations"][0]["value"]).ids == it.prompt)
        answer = data[i]["conversations"][1]["value"]
        assert it.max_tokens == len(tok.encode(answer, add_special_tokens=False).ids)
    with pytest.raises(WorkloadError, match="cannot read ShareGPT"):
        from_sharegpt(tmp_path / "missing.json", card.path / "tokenizer.json", vocab_size=4096, num=1)
