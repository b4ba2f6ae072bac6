"""GPUs through NVML (the nvidia-ml-py package provides `import pynvml`). Without NVML or GPUs nothing fails:
the answer says unavailable and why."""
from __future__ import annotations

import os
from typing import Any


def gpu_inventory() -> dict[str, Any]:
    """{"available": bool, "reason"?, "driver"?, "devices": [{index, name, memory_total_bytes, uuid}]}."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "pynvml (nvidia-ml-py) is not installed", "devices": []}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML unavailable: {exc}", "devices": []}
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            devices.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                "uuid": pynvml.nvmlDeviceGetUUID(h),
            })
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {"available": bool(devices), "reason": None if devices else "NVML found no GPU",
                "driver": driver.decode() if isinstance(driver, bytes) else driver, "devices": devices}
    finally:
        pynvml.nvmlShutdown()


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Optional  # noqa: E402


@dataclass
class GPUSampler:
    """NVML sampling in a background thread: memory used/total, utilization, power, SM clock, per GPU, each tagged
    with the role of the server on it (`roles`: GPU index -> role, e.g. {0: "prefill", 1: "decode"}).
    Without NVML or GPUs it records why and samples nothing."""
    interval_s: float = 0.5
    roles: dict[int, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    unavailable: Optional[str] = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def start(self) -> "GPUSampler":
        inv = gpu_inventory()
        if not inv["available"]:
            self.unavailable = inv["reason"]
            return self
        self._thread = threading.Thread(target=self._loop, name="ctxkit-nvml", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        try:
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            t0 = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic() - t0
                for i, h in enumerate(handles):
                    row: dict[str, Any] = {"t_s": round(now, 3), "gpu": i, "role": self.roles.get(i, "")}
                    for key, fn in (("memory", pynvml.nvmlDeviceGetMemoryInfo),
                                    ("util", pynvml.nvmlDeviceGetUtilizationRates)):
                        try:
                            v = fn(h)
                            if key == "memory":
                                row["memory_used_bytes"], row["memory_total_bytes"] = int(v.used), int(v.total)
                            else:
                                row["utilization_pct"] = int(v.gpu)
                        except pynvml.NVMLError:
                            pass
                    try:
                        row["power_w"] = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
                    except pynvml.NVMLError:
                        pass
                    try:
                        row["sm_clock_mhz"] = int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
                    except pynvml.NVMLError:
                        pass
                    self.rows.append(row)
                self._stop.wait(self.interval_s)
        finally:
            pynvml.nvmlShutdown()

    def stop(self) -> dict[str, Any]:
        """profiling.gpu: per GPU avg/peak of each quantity, or why nothing was sampled."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.unavailable:
            return {"available": False, "reason": self.unavailable}
        per_gpu: dict[str, Any] = {}
        for gpu in sorted({r["gpu"] for r in self.rows}):
            rows = [r for r in self.rows if r["gpu"] == gpu]
            entry: dict[str, Any] = {"role": rows[0]["role"], "samples": len(rows)}
            for key in ("memory_used_bytes", "utilization_pct", "power_w", "sm_clock_mhz"):
                vals = [r[key] for r in rows if key in r]
                if vals:
                    entry[f"avg_{key}"] = sum(vals) / len(vals)
                    entry[f"peak_{key}"] = max(vals)
            if rows and "memory_total_bytes" in rows[0]:
                entry["memory_total_bytes"] = rows[0]["memory_total_bytes"]
            per_gpu[str(gpu)] = entry
        return {"available": True, "interval_s": self.interval_s, "gpus": per_gpu}

    def write_timeline(self, path: "os.PathLike[str] | str") -> bool:
        if not self.rows:
            return False
        import pandas as pd
        pd.DataFrame(self.rows).to_csv(path, index=False)
        return True

    def __enter__(self) -> "GPUSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


# Peak numbers of the GPUs ctxkit knows, for physical floors. Dense bf16 tensor FLOP/s and HBM bandwidth from
# NVIDIA's datasheets: H100 SXM5 80GB and H200 SXM 141GB (Hopper datasheets, 2023/2024), A100 SXM4 80GB (A100
# datasheet, 2021), L40S (L40S datasheet, 2023). Sparse FLOP/s figures are halved to dense.
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16_flops": 989e12, "hbm_bytes_per_s": 3.35e12},
    "H200": {"bf16_flops": 989e12, "hbm_bytes_per_s": 4.8e12},
    "A100 SXM 80GB": {"bf16_flops": 312e12, "hbm_bytes_per_s": 2.039e12},
    "L40S": {"bf16_flops": 362e12, "hbm_bytes_per_s": 0.864e12},
}


def peak_for(gpu_name: str) -> Optional[tuple[str, dict[str, float]]]:
    """The table entry for an NVML device name (e.g. 'NVIDIA H100 80GB HBM3' -> 'H100 SXM')."""
    name = gpu_name.upper()
    if "H200" in name:
        return "H200", GPU_PEAKS["H200"]
    if "H100" in name and "PCIE" not in name:
        return "H100 SXM", GPU_PEAKS["H100 SXM"]
    if "A100" in name and "80" in name:
        return "A100 SXM 80GB", GPU_PEAKS["A100 SXM 80GB"]
    if "L40S" in name:
        return "L40S", GPU_PEAKS["L40S"]
    return None
