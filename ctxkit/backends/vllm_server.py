"""VLLMServer: a real vLLM OpenAI server (`python -m vllm.entrypoints.openai.api_server`), managed.

Loaded from a model card with `--load-format dummy` (random weights, the architecture's real timing), or from
real weights when `model_source` names them. Process handling (process group, health wait, teardown) is
ManagedServer's.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from ctxkit.backends.base import BackendUnavailable
from ctxkit.backends.process import ManagedServer
from ctxkit.models import ModelCard


def vllm_available(python: str = sys.executable) -> tuple[bool, str]:
    """(True, version) if `python` can import vLLM; (False, reason) otherwise. Checked without importing vLLM here."""
    if python == sys.executable:
        spec = importlib.util.find_spec("vllm")
        if spec is None:
            return False, f"vLLM is not installed for {python} (pip install -e '.[cpu]' on a CPU, '.[gpu]' on a GPU)"
    try:
        out = subprocess.run([python, "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {python}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"`import vllm` fails for {python}: {last}"
    return True, out.stdout.strip()



VLLM_PYTHON_ENV = "CTXKIT_VLLM_PYTHON"


class VLLMServer(ManagedServer):
    mode = "real"
    kind = "vLLM server"

    def __init__(self, model: str = "tiny-llama", *, name: str = "vllm", model_source: Optional[str] = None,
                 host: str = "127.0.0.1", port: Optional[int] = None, seed: int = 0, dtype: str = "bfloat16",
                 max_model_len: int = 4096, extra_args: Optional[list[str]] = None,
                 env: Optional[dict[str, str]] = None, log_dir: Optional[Path] = None,
                 startup_timeout_s: float = 300.0, kv_cache_space_gib: Optional[float] = None,
                 gpu_memory_utilization: Optional[float] = None, enforce_eager: bool = False,
                 python: Optional[str] = None, cpu_nice: int = 0) -> None:
        # CTXKIT_VLLM_PYTHON: run vLLM from another environment than the harness's own.
        python = python or os.environ.get(VLLM_PYTHON_ENV) or sys.executable
        super().__init__(name=name, host=host, port=port, env=env, log_dir=log_dir,
                         startup_timeout_s=startup_timeout_s, python=python, cpu_nice=cpu_nice)
        self.card = ModelCard.load(model)
        self.model = self.card.name
        self.model_source = model_source
        self.seed = seed
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args or [])
        self.kv_cache_space_gib = kv_cache_space_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enforce_eager = enforce_eager

    @classmethod
    def from_params(cls, server: Any, *, seed: int, name: str = "vllm", log_dir: Optional[Path] = None,
                    extra_args: Optional[list[str]] = None, env: Optional[dict[str, str]] = None) -> "VLLMServer":
        """From a params.ServerParams; extra_args/env are added to the parameters' own (e.g. a KV connector)."""
        return cls(server.model, name=name, model_source=server.model_source, host=server.host, seed=seed,
                   dtype=server.dtype, max_model_len=server.max_model_len,
                   extra_args=list(server.extra_args) + list(extra_args or []),
                   env={**server.env, **(env or {})}, log_dir=log_dir, startup_timeout_s=server.startup_timeout_s,
                   kv_cache_space_gib=server.kv_cache_space_gib,
                   gpu_memory_utilization=server.gpu_memory_utilization, enforce_eager=server.enforce_eager,
                   cpu_nice=server.cpu_nice)

    def preflight(self) -> None:
        ok, reason = vllm_available(self.python)
        if not ok:
            raise BackendUnavailable(reason)

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server",
               "--host", self.host, "--port", str(self.port),
               "--served-model-name", self.model,
               "--seed", str(self.seed), "--dtype", self.dtype, "--max-model-len", str(self.max_model_len)]
        if self.model_source:
            cmd += ["--model", self.model_source, "--tokenizer", self.model_source]
        else:
            cmd += ["--model", str(self.card.path), "--load-format", "dummy"]
        if self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.enforce_eager and "--enforce-eager" not in self.extra_args:
            cmd += ["--enforce-eager"]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.kv_cache_space_gib is not None and "VLLM_CPU_KVCACHE_SPACE" not in self.env:
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{self.kv_cache_space_gib:g}"
        return env

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "card": self.card.name,
                "weights": self.model_source or "dummy"}

    def __repr__(self) -> str:
        return f"VLLMServer({self.name!r}, model={self.model!r}, url={self.base_url or '-'})"
