"""GPU telemetry: an NVML sampler in a background thread, per GPU and tagged with the role of the server on it."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ctxkit.hardware import gpu_inventory


@dataclass
class GPUSampler:
    """NVML sampling in a background thread: memory used/total, utilization, power, SM clock, per GPU, each tagged
    with the role of the server on it (`roles`: GPU index -> role, e.g. {0: "prefill", 1: "decode"}).
    Without NVML or GPUs it records why and samples nothing."""
    interval_s: float = 0.5
    roles: dict[int, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)     # columns added to every row (e.g. the topology measured)
    rows: list[dict[str, Any]] = field(default_factory=list)
    unavailable: Optional[str] = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def start(self) -> "GPUSampler":
        """Start sampling; a second call (e.g. `with sampler:` and then `start()`) does nothing: one thread only."""
        if self._thread is not None or self.unavailable is not None:
            return self
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
            while not self._stop.is_set():
                for i, h in enumerate(handles):
                    # t_ns: the client's clock (perf_counter_ns, as request records and server scrapes), so that
                    # memory and utilization line up with the requests and the server's KV usage; t_wall_s (the
                    # wall clock, as the scrapes') for other hosts' logs
                    row: dict[str, Any] = {**self.tags, "t_wall_s": time.time(), "t_ns": time.perf_counter_ns(),
                                           "gpu": i, "role": self.roles.get(i, "")}
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
        return write_timeline([self], path)

    def __enter__(self) -> "GPUSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def write_timeline(samplers: list[GPUSampler], path: "os.PathLike[str] | str") -> bool:
    """One CSV of every sampler's rows (their tags tell them apart); False, and no file, when nothing was sampled."""
    rows = [r for s in samplers for r in s.rows]
    if not rows:
        return False
    import pandas as pd
    pd.DataFrame(rows).to_csv(path, index=False)
    return True
