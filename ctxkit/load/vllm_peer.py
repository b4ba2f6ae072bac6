"""vLLM's own benchmark client (`vllm bench serve`, importable as vllm.benchmarks.serve) as a peer to compare
ctxkit's client against. Runs in a subprocess (its own event loop and process), returns its result JSON."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

_DRIVER = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def vllm_bench_serve(base_url: str, model: str, tokenizer: str, *, input_len: int, output_len: int,
                     num_prompts: int, request_rate: float, seed: int = 0, burstiness: float = 1.0,
                     max_concurrency: Optional[int] = None, extra_args: Optional[list[str]] = None,
                     python: str = sys.executable, timeout_s: float = 900) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        args = ["--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions",
                "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
                "--random-input-len", str(input_len), "--random-output-len", str(output_len),
                "--num-prompts", str(num_prompts), "--request-rate", str(request_rate),
                "--burstiness", str(burstiness), "--seed", str(seed), "--ignore-eos", "--disable-tqdm",
                "--save-result", "--result-dir", tmp, "--result-filename", "result.json"]
        if max_concurrency:
            args += ["--max-concurrency", str(max_concurrency)]
        args += list(extra_args or [])
        proc = subprocess.run([python, "-c", _DRIVER, *args], capture_output=True, text=True, timeout=timeout_s)
        result = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"vllm bench serve failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())
