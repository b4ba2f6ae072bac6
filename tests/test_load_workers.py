"""Load from several client processes (ctxkit.load.workers): one schedule split across workers that share a
start, records merged; `ctxkit bench --num-workers` as a user types it; no worker outlives a failure."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from ctxkit.backends import Simulated
from ctxkit.load.arrivals import Arrivals
from ctxkit.load.workers import WorkerError, lag_by_worker, run_load_workers, split
from ctxkit.load.workloads import LengthDist, synthetic

from conftest import run_cli


def items(n: int, out_len: int = 4):
    return synthetic(n, LengthDist("fixed", 32), LengthDist("fixed", out_len), vocab_size=4096, seed=0)


def test_split_deals_one_schedule_out():
    """Poisson: every request exactly once, each with the due time the one-process schedule gives it."""
    work, arr = items(11), Arrivals("poisson", 50.0, seed=3)
    shares = split(work, arr, 3)
    one = dict(zip((it.request_id for it in work), arr.offsets_s(work)))
    dealt = {it.request_id: it.arrival_ms / 1000 for share, a in shares for it in share}
    assert [len(s) for s, _ in shares] == [4, 4, 3] and all(a.kind == "trace" for _, a in shares)
    assert dealt == pytest.approx(one)
    closed = split(work, Arrivals("concurrency", concurrency=5), 2)   # clients 0, 2, 4 | 1, 3: items by i mod 5
    assert [a.concurrency for _, a in closed] == [3, 2]
    assert [[int(it.request_id.split("-")[-1]) for it in s] for s, _ in closed] == [[0, 2, 4, 5, 7, 9, 10], [1, 3, 6, 8]]


def test_workers_share_one_start_and_merge_every_record(tmp_path, monkeypatch):
    """Two worker processes against the simulator: all 40 records come back once, from both workers, and their
    scheduled send times are the one schedule's offsets from one t0 (a worker with its own start would shift
    its half of the schedule by the time between the two starts)."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    work, arr = items(40), Arrivals("poisson", 40.0, seed=1)
    seen = []
    with Simulated(ttft_ms=5.0, tpot_ms=1.0, log_dir=tmp_path) as sim:
        records = run_load_workers(sim.base_url, sim.model, work, arr, workers=2,
                                   on_record=lambda r, done, total: seen.append((done, total)))
    assert sorted(r.request_id for r in records) == sorted(it.request_id for it in work)
    assert all(r.ok for r in records) and {r.tags["worker"] for r in records} == {0, 1}
    assert seen[-1] == (40, 40)
    offsets = dict(zip((it.request_id for it in work), arr.offsets_s(work)))
    t0 = {r.t_sched_ns - round(offsets[r.request_id] * 1e9) for r in records}
    assert max(t0) - min(t0) <= 1_000, "each worker scheduled from its own start"
    lags = lag_by_worker(records)
    assert [w["worker"] for w in lags] == [0, 1] and sum(w["sent"] for w in lags) == 40


def test_a_stop_rule_in_the_parent_ends_every_worker_s_window(tmp_path, monkeypatch):
    """The goodput search's early stop with two workers: the parent's rule, asked after each finished record, says
    "drain" at the 30th; both workers stop sending, so far fewer than the 400 planned go out (at 200 req/s the
    window would last 2 s), and every request sent comes back as a record."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    work, arr = items(400), Arrivals("poisson", 200.0, seed=2)
    asked = []

    def stop(done, live, now_ns):
        asked.append((len(done), len(live)))
        return "drain" if len(done) >= 30 else None

    with Simulated(ttft_ms=5.0, tpot_ms=1.0, log_dir=tmp_path) as sim:
        records = run_load_workers(sim.base_url, sim.model, work, arr, workers=2, stop=stop, drain_s=10.0)
    assert 30 <= len(records) < 200, len(records)           # stopped well before the schedule's end
    assert {r.tags["worker"] for r in records} == {0, 1} and all(r.ok for r in records)
    assert len({r.request_id for r in records}) == len(records)
    assert all(n_live == 0 for _, n_live in asked)           # the parent sees finished records only


def test_a_dead_worker_stops_the_run_and_no_worker_survives(tmp_path, monkeypatch):
    """A worker killed mid-window (after the first record came back): the run ends with a WorkerError, the other
    worker is stopped."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    outcome, first = {}, threading.Event()
    with Simulated(ttft_ms=5.0, tpot_ms=1.0, log_dir=tmp_path) as sim:
        def target():
            try:   # 4 req/s for 120 requests: 30 s of schedule, far longer than it takes to kill a worker
                run_load_workers(sim.base_url, sim.model, items(120), Arrivals("constant", 4.0), workers=2,
                                 on_record=lambda *_: first.set())
            except WorkerError as exc:
                outcome["error"] = str(exc)
        runner = threading.Thread(target=target)
        runner.start()
        assert first.wait(120), "no record came back"
        running = workers()
        assert len(running) == 2
        running[1].kill()
        runner.join(120)
    assert not runner.is_alive()
    assert "exited" in outcome.get("error", ""), outcome
    assert not workers()


def test_workers_die_with_their_parent(tmp_path, monkeypatch):
    """A parent killed outright (SIGKILL: no finally runs) takes its workers along: none keeps loading the
    server."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(ttft_ms=5.0, tpot_ms=1.0, log_dir=tmp_path) as sim:
        code = ("import sys; from ctxkit.load.arrivals import Arrivals; from ctxkit.load.workers import "
                "run_load_workers; from ctxkit.load.workloads import LengthDist, synthetic\n"
                "work = synthetic(120, LengthDist('fixed', 32), LengthDist('fixed', 4), vocab_size=4096, seed=0)\n"
                f"run_load_workers({sim.base_url!r}, 'simulated', work, Arrivals('constant', 4.0), workers=2, "
                "on_record=lambda *_: print('record', flush=True))")
        parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert parent.stdout.readline().startswith("record")      # the window is under way
            children = psutil.Process(parent.pid).children()
            assert len(children) == 2
            parent.kill()
            parent.wait(30)
            gone, alive = psutil.wait_procs(children, timeout=30)
            assert not alive, [p.pid for p in alive]
        finally:
            parent.kill()
            parent.stdout.close()


def workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "ctxkit.load.workers" in " ".join(p.cmdline())]


@pytest.mark.vllm
def test_bench_num_workers_against_vllm(vllm_server, runs_dir):
    """`ctxkit bench --num-workers 2` with the default warmup: every request measured once, both workers' send lag
    in the summary."""
    result = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", vllm_server.base_url, "--model",
                     "tiny-llama", "--random-input-len", "64", "--random-output-len", "4", "--num-prompts", "8",
                     "--request-rate", "20", "--num-workers", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["profiling"]["latency"]["completed"] == 8 and summary["profiling"]["latency"]["failed"] == 0
    workers = summary["profiling"]["client_workers"]
    assert [w["worker"] for w in workers] == [0, 1] and [w["sent"] for w in workers] == [4, 4]
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    measured = [r for r in records if not r["warmup"]]
    assert len(measured) == 8 and len({r["request_id"] for r in measured}) == 8
    assert sum(r["warmup"] for r in records) == 2


@pytest.mark.parametrize("extra", [["--max-concurrency", "4"]], ids=["max-concurrency"])
def test_bench_refuses_what_workers_cannot_do(runs_dir, extra):
    """Refused before anything starts (no server: the URL answers nothing), with the reason."""
    result = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", "http://127.0.0.1:9", "--model",
                     "tiny-llama", "--num-workers", "2", "--request-rate", "5", *extra, timeout=120)
    assert result.returncode != 0
    assert "one process" in result.stderr, result.stderr[-2000:]


@pytest.mark.vllm
def test_e2_points_from_two_workers(vllm_server, runs_dir):
    """E2 with `workers=2`: a closed-loop and a Poisson point, each from two client processes, every request
    recorded once with its worker, each point's worker lag in the sweep table."""
    result = run_cli("--runs-dir", str(runs_dir), "run", "e2_concurrency", "--set", "backend=endpoint",
                     "--set", f"endpoint_url={vllm_server.base_url}", "--set", "concurrency_levels=[2]",
                     "--set", "request_rates=[10]", "--set", "requests_per_point=6", "--set", "workers=2",
                     "--set", "workload.input_len=64", "--set", "workload.output_len=4", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    sweep = json.loads((run / "summary.json").read_text())["sweep"]
    assert [p["point"] for p in sweep] == ["c2", "r10"]
    assert all(p["client_workers"] == 2 and p["worker_send_lag_p99_ms_max"] is not None for p in sweep), sweep
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    measured = [r for r in records if not r["warmup"]]
    assert len(measured) == 12 and {r["tags"]["worker"] for r in measured} == {0, 1}
