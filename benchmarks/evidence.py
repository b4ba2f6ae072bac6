"""What a benchmark's recorded output says about where it came from: the commit its code ran at and the command."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def code_state() -> str:
    """The commit the code runs at, read when the benchmark starts (a long run outlives later commits).
    CTXKIT_GIT_COMMIT first, as the GPU run scripts set it: a copied tree may carry a stale .git (one did, and its
    record named a commit weeks old)."""
    if os.environ.get("CTXKIT_GIT_COMMIT"):
        return os.environ["CTXKIT_GIT_COMMIT"][:12] + " (CTXKIT_GIT_COMMIT)"
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if git.returncode != 0:
        return "unknown (no .git, no CTXKIT_GIT_COMMIT)"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "ctxkit",
                            "benchmarks"], capture_output=True, text=True).stdout.strip()
    return git.stdout.strip()[:12] + (" with uncommitted changes" if dirty else "")


def host() -> str:
    """The machine in a line: its CPU model and the cores this process may use."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return f"{len(os.sched_getaffinity(0))} cores of {model or platform.machine()}"


def record(path: Path, text: str, code: str) -> None:
    """Printed lines as evidence: the command that made them, the commit it ran at and the host, above them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"Written by `python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}` at commit "
                    f"{code}, on {host()}.\n\n```\n{text}```\n")
