"""What the machine has: GPUs through NVML (the nvidia-ml-py package provides `import pynvml`) and the datasheet
peaks of the GPUs ctxkit knows (for physical floors). Without NVML or GPUs nothing fails: the answer says
unavailable and why. Placement, run metadata, doctor and the GPU sampler read it; it imports nothing of ctxkit."""
from __future__ import annotations

from typing import Any, Optional


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
