"""AIConfigurator (NVIDIA's disaggregated-serving configurator) as a peer prediction beside a measured goodput.

AIConfigurator predicts, from a performance database of its own for a GPU and a vLLM release, the request rate a
placement sustains under a TTFT and TPOT limit. Its definition is not E4's: a steady batch at a chosen concurrency
(every request meets the limits on average), where E4 measures SLO attainment under Poisson arrivals. It is an optional
peer, installed in its own virtualenv (`pip install aiconfigurator`, pinned to a vLLM its database knows); ctxkit runs
its command line and reads the table it prints.

    predict(exe, model_dir, "h100_sxm", Placement(prefill=0, decode=0, replicas=1), 4096, 256, 2500, 25)
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

from pydantic import BaseModel

from ctxkit.plan.placements import Placement

# GPU name as NVML reports it -> AIConfigurator's system; a GPU it has no database for gets no prediction
TOP_N = 50       # rows the peer prints per mode: a placement it ranks below these gets no prediction
SYSTEMS = (("GB200", "gb200_sxm"), ("B200", "b200_sxm"), ("H200", "h200_sxm"), ("H100", "h100_sxm"))


class PeerError(RuntimeError):
    """The peer could not be run, or printed nothing ctxkit can read."""


class Prediction(BaseModel):
    """The peer's best configuration for one placement, workload and SLO (its first table row that matches)."""
    system: str
    version: str
    placement: Placement
    isl: int
    osl: int
    ttft_ms: float
    tpot_ms: float
    request_rate: Optional[float]          # req/s; None where the peer printed no row of this placement (it prints
                                           # only its best few per mode)
    predicted_ttft_ms: Optional[float] = None
    concurrency: Optional[str] = None      # the steady batch the rate is predicted at, as the peer prints it
    command: list[str]


def system_for(gpu_name: str) -> Optional[str]:
    """The peer's SXM database for an SXM part; PCIe and NVL cards (other clocks and links) get none."""
    name = gpu_name.upper()
    if "PCIE" in name or "NVL" in name:
        return None
    return next((system for key, system in SYSTEMS if key in name), None)


def command(exe: str, model_dir: Path, system: str, placement: Placement, isl: int, osl: int, ttft_ms: float,
            tpot_ms: float) -> list[str]:
    return [exe, "cli", "default", "--model-path", str(model_dir), "--system", system, "--backend", "vllm",
            "--total-gpus", str(placement.gpus), "--serving-mode", placement.mode, "--isl", str(isl), "--osl",
            str(osl), "--ttft", f"{ttft_ms:g}", "--tpot", f"{tpot_ms:g}", "--top-n", str(TOP_N), "--no-color"]


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The "<mode> Top Configurations" tables of the peer's output, each row keyed by its header."""
    found: dict[str, list[dict[str, str]]] = {}
    mode, header = None, None
    for line in text.splitlines():
        if m := re.match(r"^(\w+) Top Configurations", line):
            mode, header = m.group(1), None
        elif mode and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            else:
                found.setdefault(mode, []).append(dict(zip(header, cells)))
        elif mode and header and not line.startswith("+"):
            mode = None
    return found


def matches(row: dict[str, str], placement: Placement) -> bool:
    """A row of this placement with one GPU per worker (E4's servers run tensor-parallel 1). The peer counts a
    disaggregated placement as replicas of a smaller one: 2P2D may be two replicas of 1P1D."""
    def first(key: str) -> int:             # "2 (=1x2)" -> 2
        m = re.match(r"\d+", row.get(key, ""))
        return int(m.group()) if m else 0
    n = first("replicas")
    if placement.replicas:
        return n == placement.replicas and first("gpus/worker") == 1
    return (n * first("(p)workers"), n * first("(d)workers")) == (placement.prefill, placement.decode) and \
        first("(p)gpus/worker") == first("(d)gpus/worker") == 1


def parse(text: str, placement: Placement) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """(req/s, TTFT ms, concurrency) of the best row of this placement; Nones where the peer found none."""
    for row in tables(text).get(placement.mode, []):
        if matches(row, placement):
            return float(row["req/s"]), float(row["TTFT"]), row.get("concurrency")
    return None, None, None


def predict(exe: str, model_dir: Path, system: str, placement: Placement, isl: int, osl: int, ttft_ms: float,
            tpot_ms: float, cwd: Optional[Path] = None, timeout_s: float = 300.0) -> Prediction:
    """Run the peer (seconds on a CPU) and read its best configuration of this placement."""
    cmd = command(exe, model_dir, system, placement, isl, osl, ttft_ms, tpot_ms)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"{' '.join(cmd)}: {exc}") from exc
    text = done.stdout + done.stderr
    version = re.search(r"AIConfigurator version: (\S+)", text)
    if done.returncode != 0 or version is None:
        raise PeerError(f"{' '.join(cmd)} exited {done.returncode}: {text.strip()[-600:]}")
    rate, ttft, concurrency = parse(text, placement)
    return Prediction(system=system, version=version.group(1), placement=placement, isl=isl, osl=osl,
                      ttft_ms=ttft_ms, tpot_ms=tpot_ms, request_rate=rate, predicted_ttft_ms=ttft,
                      concurrency=concurrency, command=[Path(exe).name, *cmd[1:]])
