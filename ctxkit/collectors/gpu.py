"""GPUs through NVML (the nvidia-ml-py package provides `import pynvml`). Without NVML or GPUs nothing fails:
the answer says unavailable and why."""
from __future__ import annotations

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
