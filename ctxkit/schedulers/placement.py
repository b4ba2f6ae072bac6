"""Placement: which GPUs (or CPU cores) each server gets, and why. Recorded under summary.gpu_assignment.

GPUs are discovered through NVML. At least one GPU per server: each server gets its own, in the order of the roles
(prefill instances first, then decode). Fewer GPUs than servers: servers share them round robin, each capped to
the memory fraction that fits (0.9 / servers per GPU). prefill_visible_devices / decode_visible_devices override
the choice. A CUDA_VISIBLE_DEVICES of GPU indices in ctxkit's own environment limits it to those GPUs (NVML lists
every GPU of the host regardless): two runs on one host, each given its own GPUs, do not land on the same ones. No GPU: each server gets its own cores when the machine has at least
one core per server (VLLM_CPU_OMP_THREADS_BIND), else they share all cores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ctxkit.hardware import gpu_inventory
from ctxkit.params import flag_value


@dataclass
class Slot:
    role: str                      # prefill | decode | aggregated
    index: int
    env: dict[str, str] = field(default_factory=dict)
    gpu_memory_utilization: Optional[float] = None
    devices: str = ""              # GPU ids or CPU cores, for the record


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def place(roles: list[str], prefill_visible_devices: Optional[str] = None,
          decode_visible_devices: Optional[str] = None) -> tuple[list[Slot], dict[str, Any]]:
    """Slots for servers of the given roles (in order), and the record of the choice with its reason."""
    inv = gpu_inventory()
    slots = [Slot(role, sum(1 for r in roles[:i] if r == role)) for i, role in enumerate(roles)]
    n = len(roles)
    if inv["available"]:
        gpus, limited = visible([d["index"] for d in inv["devices"]])
        manual = {"prefill": prefill_visible_devices, "decode": decode_visible_devices}
        if any(manual.values()):
            for s in slots:
                dev = manual.get(s.role) or ",".join(map(str, gpus))
                s.env["CUDA_VISIBLE_DEVICES"], s.devices = dev, f"GPU {dev}"
            reason = "manual prefill_visible_devices / decode_visible_devices"
        elif len(gpus) >= n:
            for s, g in zip(slots, gpus):
                s.env["CUDA_VISIBLE_DEVICES"], s.devices = str(g), f"GPU {g}"
            reason = f"{len(gpus)} GPUs for {n} servers: one GPU each"
        else:
            frac = round(0.9 / max(1, -(-n // len(gpus))), 2)
            for i, s in enumerate(slots):
                g = gpus[i % len(gpus)]
                s.env["CUDA_VISIBLE_DEVICES"], s.devices = str(g), f"GPU {g} (shared)"
                s.gpu_memory_utilization = frac
            reason = f"{len(gpus)} GPU(s) for {n} servers: shared, gpu_memory_utilization {frac} each"
        reason += f" ({limited})" if limited else ""
        kind = "gpu"
    else:
        cores = _cores()
        if len(cores) >= n:
            per = len(cores) // n
            for i, s in enumerate(slots):
                mine = cores[i * per:(i + 1) * per]
                s.env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, mine))
                s.devices = f"CPU cores {','.join(map(str, mine))}"
            reason = f"no GPU ({inv['reason']}); {len(cores)} cores for {n} servers: {per} core(s) each"
        else:
            for s in slots:
                s.devices = "all CPU cores (shared)"
            reason = f"no GPU ({inv['reason']}); {len(cores)} cores for {n} servers: shared"
        kind = "cpu"
    record = {"kind": kind, "reason": reason,
              "servers": [{"role": s.role, "index": s.index, "devices": s.devices, "env": s.env,
                           "gpu_memory_utilization": s.gpu_memory_utilization} for s in slots]}
    return slots, record


def visible(gpus: list[int]) -> tuple[list[int], str]:
    """The host's GPUs that ctxkit's CUDA_VISIBLE_DEVICES leaves it, and a note for the record (empty when it is
    unset). Only plain indices are honoured; UUIDs or MIG names are not: refused, not guessed."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return gpus, ""
    if raw.strip() == "":
        raise ValueError("CUDA_VISIBLE_DEVICES is empty: it hides every GPU; unset it, or name the GPUs to use")
    wanted = list(dict.fromkeys(g.strip() for g in raw.split(",") if g.strip()))    # once each
    if not all(g.isdigit() for g in wanted):
        raise ValueError(f"CUDA_VISIBLE_DEVICES={raw!r}: ctxkit places servers by GPU index; give indices "
                         f"(e.g. 2,3), or prefill_visible_devices / decode_visible_devices")
    missing = [g for g in wanted if int(g) not in gpus]
    if missing:
        raise ValueError(f"CUDA_VISIBLE_DEVICES={raw!r} names GPU(s) {', '.join(missing)}; this host has "
                         f"{', '.join(map(str, gpus))}")
    return [int(g) for g in wanted], f"CUDA_VISIBLE_DEVICES={raw} limits ctxkit to GPUs {','.join(wanted)}"


def devices_used(record: dict[str, Any]) -> float:
    """What a placement occupies, for per-GPU numbers: distinct GPUs (two servers sharing one GPU use one), or on
    the CPU tier distinct core sets (servers sharing all cores use one set)."""
    servers = record.get("servers") or []
    if record.get("kind") == "attached":      # a deployment ctxkit attached to: what its topology file states
        return record["devices"]
    if record.get("kind") == "gpu":
        gpus = {g for s in servers for g in str(s["env"].get("CUDA_VISIBLE_DEVICES", "")).split(",") if g != ""}
        return max(1, len(gpus))
    sets = {s["env"].get("VLLM_CPU_OMP_THREADS_BIND", "all") for s in servers}
    return max(1, len(sets))


def server_gpu_roles(env: dict[str, str], extra_args: list[str], role: str = "aggregated") -> dict[int, str]:
    """GPU index -> `role` for the one server an experiment starts (E1, E2, E5): the GPUs CUDA_VISIBLE_DEVICES gives
    it (its own env first, then ctxkit's), as many as its --tensor-parallel-size; the first ones when nothing limits
    it.
    Indices only: a UUID list names no NVML index here, and then no GPU gets a role."""
    tp = flag_value(extra_args, "--tensor-parallel-size") or flag_value(extra_args, "-tp") or 1
    visible = env.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    ids = [g.strip() for g in visible.split(",") if g.strip()] if visible is not None else \
        [str(g) for g in range(tp)]
    if not all(g.isdigit() for g in ids):
        return {}
    return {int(g): role for g in ids[:tp]}


def gpu_roles(record: dict[str, Any]) -> dict[int, str]:
    """GPU index -> the roles of the servers placed on it ("prefill", "decode", "aggregated", or "prefill+decode"
    when shared), for tagging GPU telemetry; empty on the CPU tier."""
    if record.get("kind") != "gpu":
        return {}
    roles: dict[int, list[str]] = {}
    for s in record.get("servers") or []:
        for g in str(s["env"].get("CUDA_VISIBLE_DEVICES", "")).split(","):
            if g.strip().isdigit() and s["role"] not in roles.setdefault(int(g), []):
                roles[int(g)].append(s["role"])
    return {g: "+".join(r) for g, r in sorted(roles.items())}
