"""vLLM's own benchmark client (`vllm bench serve`, importable as vllm.benchmarks.serve) as a peer to compare
ctxkit's client against. Runs in a subprocess (its own event loop and process), returns its result JSON."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_DRIVER = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def vllm_bench_trace(base_url: str, model: str, tokenizer: str, trace: Path, *, num_prompts: int, seed: int = 0,
                     python: str = sys.executable, timeout_s: float = 900) -> dict[str, Any]:
    """vLLM's timed_trace dataset on a Mooncake-format trace (timestamps in ms, 512-token hash blocks): token-id
    prompts sent on the trace's own timestamps, as ctxkit's trace replay sends them."""
    args = ["--dataset-name", "timed_trace", "--dataset-path", str(trace), "--timed-trace-chunk-hash-size", "512",
            "--timed-trace-sec-multiplier", "0.001"]
    return _run(base_url, model, tokenizer, num_prompts, seed, args, python, timeout_s)


def _run(base_url: str, model: str, tokenizer: str, num_prompts: int, seed: int, dataset_args: list[str],
         python: str, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        args = ["--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions", "--model", model,
                "--tokenizer", tokenizer, "--num-prompts", str(num_prompts), "--seed", str(seed), "--disable-tqdm",
                "--save-result", "--result-dir", tmp, "--result-filename", "result.json", *dataset_args]
        proc = subprocess.run([python, "-c", _DRIVER, *args], capture_output=True, text=True, timeout=timeout_s)
        result = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"vllm bench serve failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(result.read_text())
        return data
