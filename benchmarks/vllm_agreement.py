"""ctxkit's client against vLLM's own (`vllm bench serve`), alternating, on one server and one schedule.

    python benchmarks/vllm_agreement.py --base-url http://127.0.0.1:8000 [--rounds 6] [--trace FILE]

Fair by construction: both clients replay the same Mooncake-format trace on its timestamps (ctxkit: `ctxkit bench
--dataset-name trace --arrival trace`; vLLM: `--dataset-name timed_trace`), both send token-id prompts of the same
lengths, every prompt is fresh (its own hash ids; run the server with prefix caching off), and each round is
scraped from the server's /metrics before and after. The server's own speed drifts between windows (±15% in TPOT on
a 2-core machine), so each client's median is also read against the server's mean in its own window
("server-normalized"): a ratio near 1 means both clients see the same server the same way.
Prints, per key, the ratio of medians across rounds (ctxkit / vLLM), raw and server-normalized.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxkit.backends import Endpoint  # noqa: E402
from ctxkit.collectors.server_metrics import ServerMetricsCollector  # noqa: E402
from ctxkit.load.vllm_peer import vllm_bench_trace  # noqa: E402
from ctxkit.models import ModelCard  # noqa: E402

TRACE = ROOT / "tests" / "data" / "agreement_trace.jsonl"
# summary.vllm key -> the server histogram it is read against
KEYS = {"median_ttft_ms": "ttft", "median_tpot_ms": "tpot", "mean_ttft_ms": "ttft", "mean_tpot_ms": "tpot"}

Window = tuple[dict[str, Any], dict[str, Any]]   # (vLLM-keyed result, the server's deltas over the window)


def ctxkit_window(base_url: str, model: str, trace: Path, runs_dir: Path) -> Window:
    """`ctxkit bench` as a user types it; its summary carries the server's deltas of the same window."""
    n = len(trace.read_text().splitlines())
    result = subprocess.run([sys.executable, "-m", "ctxkit.cli", "--runs-dir", str(runs_dir), "bench", "--base-url",
                             base_url, "--model", model, "--dataset-name", "trace", "--dataset-path", str(trace),
                             "--arrival", "trace", "--num-prompts", str(n), "--warmup", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"ctxkit bench failed:\n{result.stderr[-3000:]}")
    summary = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    (server,) = summary["profiling"]["server"].values()
    return summary["vllm"], server


def vllm_window(base_url: str, model: str, trace: Path) -> Window:
    n = len(trace.read_text().splitlines())
    collector = ServerMetricsCollector("server", Endpoint(base_url, model).metrics).start()
    result = vllm_bench_trace(base_url, model, str(ModelCard.load(model).path), trace, num_prompts=n)
    return result, collector.stop()


def alternate(base_url: str, model: str, trace: Path, rounds: int, runs_dir: Path) -> dict[str, list[Window]]:
    """One unmeasured pass of each client, then `rounds` alternating rounds."""
    ctxkit_window(base_url, model, trace, runs_dir)
    vllm_window(base_url, model, trace)
    out: dict[str, list[Window]] = {"ctxkit": [], "vllm": []}
    for _ in range(rounds):
        out["ctxkit"].append(ctxkit_window(base_url, model, trace, runs_dir))
        out["vllm"].append(vllm_window(base_url, model, trace))
    return out


def ratios(windows: dict[str, list[Window]]) -> dict[str, dict[str, float]]:
    """ctxkit / vLLM for each key: the ratio of medians across rounds, raw and server-normalized."""
    out: dict[str, dict[str, float]] = {}
    for key, short in KEYS.items():
        raw = {c: statistics.median(v[key] for v, _ in ws) for c, ws in windows.items()}
        norm = {c: statistics.median(v[key] / s[f"mean_{short}_ms"] for v, s in ws) for c, ws in windows.items()}
        out[key] = {"raw": raw["ctxkit"] / raw["vllm"], "server_normalized": norm["ctxkit"] / norm["vllm"]}
    tput = {c: statistics.median(v["output_throughput"] for v, _ in ws) for c, ws in windows.items()}
    out["output_throughput"] = {"raw": tput["ctxkit"] / tput["vllm"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    args = ap.parse_args()
    windows = alternate(args.base_url, args.model, args.trace, args.rounds, args.runs_dir)
    print(f"{args.rounds} alternating rounds, trace {args.trace.name}; ratio ctxkit / vLLM")
    for key, r in ratios(windows).items():
        print(f"{key:20} raw {r['raw']:.3f}" + (f"   server-normalized {r['server_normalized']:.3f}"
                                                  if "server_normalized" in r else ""))
    print(json.dumps({c: [[v[k] for k in KEYS] for v, _ in ws] for c, ws in windows.items()}))


if __name__ == "__main__":
    main()
