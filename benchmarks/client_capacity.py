"""Client capacity: the highest request rate a client sustains with p99 client lag under 1 ms.

    python benchmarks/client_capacity.py [--max-rate 20000] [--seconds 3]
    python benchmarks/client_capacity.py --workers 2 [--output-tokens 64] [--lag-ms 10] [--server-processes K]

A zero-latency simulated server (first token at once, 2 tokens) runs on core 1; the client under test is pinned to
core 0. Each trial sends a constant-rate stream for --seconds; client lag = actual send time - scheduled time.
ctxkit's client reports lag itself (t_send - t_sched). vLLM's client (vllm.benchmarks.serve, --burstiness inf =
constant gaps of 1/rate) is instrumented in its own process: its request generator's start and the moment each
request function starts are recorded, against the schedule start + (i + 1) / rate that vLLM computes.
The rate is doubled until a trial fails, then bisected. Prints one table with both clients and their ratio.

    python benchmarks/client_capacity.py --shapes 4096/256,16384/512,131072/1024 --workers 4 [--tpot-ms 10]

With --shapes: each trial is one goodput-search probe (ctxkit.load.search.run_probe, as a search sends it: its stop
rule asked before every send, the server's /metrics scraped every 0.5 s, the NVML sampler running where there are
GPUs) at the shape's prompt and output lengths, streamed token by token (one chunk every --tpot-ms); from one client
process and from --workers; the limit is p99 send lag under --lag-ms (10 ms). The simulated server answers from
--server-processes processes (default: the cores the workers leave, halved).
With --workers: one client process against N (ctxkit.load.workers) against a simulated server that answers from
K processes on one port (default: half the cores left after the workers), so that the server side is not what
limits N workers.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")

from evidence import code_state, record  # noqa: E402

from ctxkit.backends import Simulated  # noqa: E402
from ctxkit.models import ModelCard  # noqa: E402

CLIENT_CORE, SERVER_CORE = 0, 1

CTXKIT_TRIAL = """
import json, os, sys
os.sched_setaffinity(0, {%(core)d})
from ctxkit.load.arrivals import Arrivals, run_load
from ctxkit.load.workloads import LengthDist, synthetic
n, rate = %(n)d, %(rate)f
items = synthetic(n, LengthDist("fixed", 32), LengthDist("fixed", 2), vocab_size=4096, seed=0)
warm = synthetic(20, LengthDist("fixed", 32), LengthDist("fixed", 2), vocab_size=4096, seed=1, id_prefix="w")
recs = run_load("%(url)s", "simulated", items, Arrivals("constant", rate), warmup=warm)
lags = [(r.t_send_ns - r.t_sched_ns) / 1e6 for r in recs if not r.warmup]
ok = sum(r.ok for r in recs if not r.warmup)
print(json.dumps({"lags_ms": lags, "ok": ok}))
"""

WORKERS_TRIAL = """
import json
from ctxkit.load.arrivals import Arrivals
from ctxkit.load.workers import run_load_workers
from ctxkit.load.workloads import LengthDist, synthetic
n, rate, workers = %(n)d, %(rate)f, %(workers)d
items = synthetic(n, LengthDist("fixed", 32), LengthDist("fixed", %(out)d), vocab_size=4096, seed=0)
recs = run_load_workers("%(url)s", "simulated", items, Arrivals("constant", rate), workers=workers)
lags = [(r.t_send_ns - r.t_sched_ns) / 1e6 for r in recs if not r.warmup]
print(json.dumps({"lags_ms": lags, "ok": sum(r.ok for r in recs)}))
"""

PROBE_TRIAL = """
import json
from ctxkit.backends.endpoint import Endpoint
from ctxkit.collectors.gpu import GPUSampler
from ctxkit.collectors.latency import SLO
from ctxkit.load.search import SearchPolicy, run_probe
from ctxkit.load.workloads import LengthDist, synthetic
n, rate, workers, n_in, n_out = %(n)d, %(rate)f, %(workers)d, %(n_in)d, %(n_out)d
policy = SearchPolicy(min_requests=n, max_requests=n, warmup_requests=20, scout_requests=None, drain_s=120,
                      metrics_interval_s=0.5)
def items(probe, batch, count):
    return synthetic(count, LengthDist("fixed", n_in), LengthDist("fixed", n_out), vocab_size=4096, seed=batch)
gpus = GPUSampler(interval_s=0.5).start()
probe = run_probe(Endpoint("%(url)s", "simulated").start(), 0, rate, items, SLO(ttft_ms=1e9), policy,
                  timeout_s=600, workers=workers)
gpus.stop()
lags = [(r.t_send_ns - r.t_sched_ns) / 1e6 for r in probe.records if not r.warmup]
print(json.dumps({"lags_ms": lags, "ok": sum(r.ok for r in probe.records if not r.warmup),
                  "gpu_rows": len(gpus.rows), "gpu": gpus.unavailable or "sampled"}))
"""

VLLM_TRIAL = """
import asyncio, json, os, sys, time
os.sched_setaffinity(0, {%(core)d})
from vllm.benchmarks import serve
from vllm.utils.argparse_utils import FlexibleArgumentParser
starts, sends = [], []
orig_get_request = serve.get_request
async def get_request(*args, **kwargs):
    starts.append(time.time())                      # vLLM's own start_ts is taken right after this
    async for item in orig_get_request(*args, **kwargs):
        yield item
serve.get_request = get_request
orig_func = serve.ASYNC_REQUEST_FUNCS["vllm"]
async def request_func(*args, **kwargs):
    sends.append(time.time())
    return await orig_func(*args, **kwargs)
serve.ASYNC_REQUEST_FUNCS["vllm"] = request_func
parser = FlexibleArgumentParser(); serve.add_cli_args(parser)
args = parser.parse_args(sys.argv[1:])
n0 = len(sends)
result = serve.main(args)
rate = args.request_rate
measured = sorted(sends)[-args.num_prompts:]       # the probe request comes first and is not scheduled
sched = [starts[-1] + (i + 1) / rate for i in range(args.num_prompts)]
lags = [(s - t) * 1000 for s, t in zip(measured, sched)]
print("RESULT " + json.dumps({"lags_ms": lags, "ok": result["completed"]}))
"""


def run_trial(code: str, timeout_s: float) -> tuple[float, int]:
    """A trial's script in its own Python: (p99 send lag in ms, requests completed) from its last printed line."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(np.percentile(data["lags_ms"], 99)), data["ok"]


def ctxkit_trial(url: str, rate: float, n: int) -> tuple[float, int]:
    return run_trial(CTXKIT_TRIAL % {"core": CLIENT_CORE, "n": n, "rate": rate, "url": url}, 600)


def workers_trial(workers: int, out_tokens: int):
    """ctxkit's client from `workers` processes (ctxkit.load.workers), not pinned: the OS spreads them."""
    def trial(url: str, rate: float, n: int) -> tuple[float, int]:
        return run_trial(WORKERS_TRIAL % {"n": n, "rate": rate, "workers": workers, "url": url, "out": out_tokens},
                         900)
    return trial


def probe_trial(workers: int, n_in: int, n_out: int):
    """One search probe at the shape from `workers` client processes (PROBE_TRIAL)."""
    def trial(url: str, rate: float, n: int) -> tuple[float, int]:
        return run_trial(PROBE_TRIAL % {"n": n, "rate": rate, "workers": workers, "url": url, "n_in": n_in,
                                        "n_out": n_out}, 1200)
    return trial


def vllm_trial(url: str, rate: float, n: int) -> tuple[float, int]:
    tok = str(ModelCard.load("tiny-llama").path)
    args = ["--backend", "vllm", "--base-url", url, "--endpoint", "/v1/completions", "--model", "simulated",
            "--tokenizer", tok, "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", "2",
            "--num-prompts", str(n), "--request-rate", str(rate), "--burstiness", "inf", "--ignore-eos",
            "--disable-tqdm", "--seed", "0"]
    out = subprocess.run([sys.executable, "-c", VLLM_TRIAL % {"core": CLIENT_CORE}, *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=900)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(out.stderr[-2000:])
    data = json.loads(lines[-1][7:])
    return float(np.percentile(data["lags_ms"], 99)), data["ok"]


def capacity(name: str, trial, url: str, seconds: float, max_rate: float,
             limit_ms: float, start: float = 25.0, least: int = 200, bisect: int = 3) -> tuple[float, list[tuple]]:
    """Double the rate from `start` req/s until a trial fails, then bisect `bisect` times between pass and fail."""
    rows: list[tuple] = []

    def attempt(rate: float) -> bool:
        n = max(least, int(rate * seconds))
        p99, ok = trial(url, rate, n)
        passed = p99 < limit_ms and ok == n
        rows.append((name, rate, n, p99, ok, passed))
        print(f"  {name:7} rate {rate:8.0f}/s  n {n:6}  p99 lag {p99:8.3f} ms  completed {ok}  "
              f"{'ok' if passed else 'FAIL'}", flush=True)
        return passed

    good, bad, rate = 0.0, None, start
    while rate <= max_rate:
        if not attempt(rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    while not good and bad and bad > start / 8:      # not even at the start: halve until a rate passes
        rate = bad / 2
        if attempt(rate):
            good = rate
        else:
            bad = rate
    for _ in range(bisect if bad and good else 0):
        mid = (good + bad) / 2
        good, bad = (mid, bad) if attempt(mid) else (good, mid)
    return good, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--max-rate", type=float, default=25600)
    ap.add_argument("--lag-ms", default="1,10", help="p99 client-lag limits to report (ms), comma separated")
    ap.add_argument("--workers", type=int, default=0,
                    help="instead: ctxkit from one process against this many (load.workers), same lag limit")
    ap.add_argument("--output-tokens", type=int, default=2, help="tokens each request streams (--workers mode)")
    ap.add_argument("--server-processes", type=int, default=None,
                    help="simulated server processes (--workers mode; default: half the cores the workers leave)")
    ap.add_argument("--shapes", help="IN/OUT,...: search probes at these prompt/output lengths (see above)")
    ap.add_argument("--tpot-ms", type=float, default=10.0, help="--shapes: the simulated server's token interval")
    ap.add_argument("--record", type=Path, help="--shapes: also write what it prints to this markdown file, with the "
                    "command, the commit and the host")
    args = ap.parse_args()
    limits = [float(x) for x in args.lag_ms.split(",")]
    if args.shapes:
        code, out = code_state(), io.StringIO()
        with contextlib.redirect_stdout(Tee(sys.stdout, out)):
            compare_shapes(args, limits[-1])
        if args.record:
            record(args.record, out.getvalue(), code)
        return
    if args.workers:
        return compare_workers(args, limits)
    table = []
    with tempfile.TemporaryDirectory() as tmp, Simulated(ttft_ms=0, tpot_ms=0, log_dir=Path(tmp)) as sim:
        os.sched_setaffinity(sim.proc.pid, {SERVER_CORE})
        print(f"zero-latency simulated server at {sim.base_url} on core {SERVER_CORE}; clients on core {CLIENT_CORE}")
        for limit in limits:
            print(f"p99 client lag limit {limit:g} ms")
            ours, _ = capacity("ctxkit", ctxkit_trial, sim.base_url, args.seconds, args.max_rate, limit)
            theirs, _ = capacity("vllm", vllm_trial, sim.base_url, args.seconds, args.max_rate, limit)
            table.append((limit, ours, theirs))
    print()
    print("max request rate (req/s) a client sustains on one core with p99 client lag under the limit")
    print(f"{'limit':>8} {'ctxkit':>10} {'vllm':>10} {'ratio':>8}   (0 = not even at 25 req/s)")
    for limit, ours, theirs in table:
        ratio = f"{ours / theirs:.2f}" if theirs else "inf"
        print(f"{limit:>6g}ms {ours:>10.0f} {theirs:>10.0f} {ratio:>8}")


def compare_workers(args: argparse.Namespace, limits: list[float]) -> None:
    """One client process against N (issue 15's goal: N = 2 sustains >= 1.7x), both measured in this run
    against one simulated server of several processes (--server-processes) where the machine has the cores."""
    table = []
    cores = os.cpu_count() or 1
    servers = args.server_processes or max(1, (cores - args.workers) // 2)
    with tempfile.TemporaryDirectory() as tmp, \
            Simulated(ttft_ms=0, tpot_ms=0, log_dir=Path(tmp), processes=servers) as sim:
        print(f"zero-latency simulated server at {sim.base_url} ({servers} processes); {cores} cores, "
              f"{args.output_tokens} tokens a request; workers not pinned")
        for limit in limits:
            print(f"p99 client lag limit {limit:g} ms")
            one, _ = capacity("x1", workers_trial(1, args.output_tokens), sim.base_url, args.seconds,
                              args.max_rate, limit)
            many, _ = capacity(f"x{args.workers}", workers_trial(args.workers, args.output_tokens), sim.base_url,
                               args.seconds, args.max_rate, limit)
            table.append((limit, one, many))
    print()
    print(f"max request rate (req/s) with p99 send lag under the limit: 1 worker process against {args.workers}")
    print(f"{'limit':>8} {'x1':>10} {'x' + str(args.workers):>10} {'ratio':>8}")
    for limit, one, many in table:
        print(f"{limit:>6g}ms {one:>10.0f} {many:>10.0f} {(many / one if one else float('inf')):>8.2f}")


class Tee(io.TextIOBase):
    """Print and keep: the lines go to the terminal as they come and into the record at the end."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


def compare_shapes(args: argparse.Namespace, limit: float) -> None:
    """Per shape: the highest rate a search probe sustains from one client process and from --workers, under
    `limit` ms of p99 send lag, against one simulated server streaming a token every --tpot-ms."""
    shapes = [tuple(int(x) for x in s.split("/")) for s in args.shapes.split(",")]
    cores = os.cpu_count() or 1
    many = max(args.workers, 1)
    servers = args.server_processes or max(1, (cores - many) // 2)
    table = []
    with tempfile.TemporaryDirectory() as tmp, \
            Simulated(ttft_ms=0, tpot_ms=args.tpot_ms, log_dir=Path(tmp), processes=servers,
                      max_model_len=max(i + o for i, o in shapes) + 16) as sim:
        print(f"simulated server at {sim.base_url}: {servers} processes, a token every {args.tpot_ms:g} ms; "
              f"{cores} cores; p99 send lag limit {limit:g} ms; trials of {args.seconds:g} s (at least 40 requests)")
        for n_in, n_out in shapes:
            start = max(1.0, 25.0 * 4096 / n_in)        # a long prompt costs its JSON: start lower
            one, _ = capacity(f"{n_in}/{n_out} x1", probe_trial(1, n_in, n_out), sim.base_url, args.seconds,
                              args.max_rate, limit, start=start, least=40, bisect=2)
            row = [n_in, n_out, one]
            if many > 1:
                more, _ = capacity(f"{n_in}/{n_out} x{many}", probe_trial(many, n_in, n_out), sim.base_url,
                                   args.seconds, args.max_rate, limit, start=max(start, one), least=40, bisect=2)
                row.append(more)
            table.append(row)
    print()
    print(f"max request rate (req/s) a search probe sustains with p99 send lag under {limit:g} ms "
          f"({cores} cores, server {servers} processes, token every {args.tpot_ms:g} ms)")
    print(f"{'shape':>14} {'x1':>8}" + (f" {'x' + str(many):>8} {'ratio':>6}" if many > 1 else ""))
    for row in table:
        line = f"{row[0]:>7}/{row[1]:<6} {row[2]:>8.1f}"
        if many > 1:
            line += f" {row[3]:>8.1f} {(row[3] / row[2] if row[2] else float('inf')):>6.2f}"
        print(line)


if __name__ == "__main__":
    main()
