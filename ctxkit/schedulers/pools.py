"""Serving topologies behind one router, each usable as a backend (context manager, base_url, model):

AggregatedPool:     N aggregated vLLM servers, requests routed round robin or to the least outstanding.
DisaggregatedPool:  P prefill + D decode vLLM servers joined by a KV connector; the router does prefill -> decode.
Servers start in parallel (each vLLM start is ~35 s on the CPU tier); everything stops on exit, also on error.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from ctxkit.backends.base import ServingBackend
from ctxkit.backends.vllm_server import VLLMServer
from ctxkit.models import ModelCard
from ctxkit.params import ServerParams
from ctxkit.schedulers.broker import kv_transfer_config, read_jsonl
from ctxkit.schedulers.placement import Slot, place
from ctxkit.schedulers.router import RouterProcess

CPU_BLOCK_SIZE, GPU_BLOCK_SIZE = 128, 16   # vLLM's default KV block per platform


def _start_all(servers: list[VLLMServer]) -> None:
    """Spawn every server from this thread (their parent-death signal is tied to it), then wait for all of them
    in parallel."""
    try:
        for s in servers:
            s.launch()
    except BaseException:
        for s in servers:
            s.stop()
        raise
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(s.wait_ready) for s in servers]
        errors = []
        for f in futures:
            try:
                f.result()
            except BaseException as exc:  # noqa: BLE001 - every start is awaited, then the first error raised
                errors.append(exc)
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]


class _Pool(ServingBackend):
    mode = "real"

    def __init__(self, name: str, log_dir: Path, model: str) -> None:
        self.name = name
        self.log_dir = Path(log_dir)
        self.model = ModelCard.load(model).name
        self.servers: list[VLLMServer] = []
        self.router: Optional[RouterProcess] = None
        self.placement: dict[str, Any] = {}

    def _server(self, server: ServerParams, seed: int, name: str, slot: Slot, extra: list[str]) -> VLLMServer:
        s = VLLMServer.from_params(server, seed=seed, name=name, log_dir=self.log_dir, extra_args=extra,
                                   env=slot.env)
        if slot.gpu_memory_utilization is not None:   # servers sharing a GPU: each gets its fraction at most
            s.gpu_memory_utilization = min(slot.gpu_memory_utilization, server.gpu_memory_utilization or 1.0)
        return s

    def router_config(self) -> dict[str, Any]:
        raise NotImplementedError  # abstract: each topology builds its router configuration

    def start(self) -> "_Pool":
        try:
            _start_all(self.servers)
            self.router = RouterProcess(self.router_config(), name=f"{self.name}-router", log_dir=self.log_dir)
            self.router.start()
        except BaseException:
            self.stop()
            raise
        self.base_url = self.router.base_url
        return self

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for s in self.servers:
            s.stop()

    def alive(self) -> bool:
        return all(s.alive() for s in self.servers) and self.router is not None and self.router.alive()

    def death_note(self) -> str:
        dead = [s for s in self.servers + ([self.router] if self.router else []) if not s.alive()]
        return "; ".join(s.death_note() for s in dead)

    @property
    def route_log(self) -> Path:
        return self.log_dir / f"{self.name}-routes.jsonl"

    def routes(self) -> list[dict[str, Any]]:
        return read_jsonl(self.route_log)

    def version(self) -> dict[str, Any]:
        return self.servers[0].version() if self.servers else {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "base_url": self.base_url, "model": self.model,
                "topology": type(self).__name__, "servers": [s.describe() for s in self.servers],
                "router": self.router.describe() if self.router else None, "placement": self.placement,
                "version": self.version()}


class AggregatedPool(_Pool):
    def __init__(self, server: ServerParams, *, seed: int, replicas: int, log_dir: Path, name: str = "aggregated",
                 policy: str = "least_outstanding") -> None:
        super().__init__(name, log_dir, server.model)
        slots, self.placement = place(["aggregated"] * replicas)
        self.policy = policy
        self.servers = [self._server(server, seed, f"{name}-{i}", slot, []) for i, slot in enumerate(slots)]

    def router_config(self) -> dict[str, Any]:
        return {"mode": "aggregated", "model": self.model, "policy": self.policy,
                "instances": {"pool": [{"name": s.name, "url": s.base_url} for s in self.servers]},
                "route_log": str(self.route_log), "handoff_log": None}


class DisaggregatedPool(_Pool):
    def __init__(self, server: ServerParams, *, seed: int, prefill: int, decode: int, connector: str, log_dir: Path,
                 name: str = "disaggregated", policy: str = "least_outstanding",
                 storage_root: Optional[Path] = None, kv_buffer_device: str = "cpu",
                 prefill_visible_devices: Optional[str] = None, decode_visible_devices: Optional[str] = None,
                 cleanup_kv: bool = True) -> None:
        super().__init__(name, log_dir, server.model)
        self.connector = connector
        self.policy = policy
        self.cleanup_kv = cleanup_kv
        self.card = ModelCard.load(server.model)
        root = Path(storage_root) if storage_root else Path("/dev/shm" if Path("/dev/shm").is_dir() else
                                                            tempfile.gettempdir())
        self.storage = Path(tempfile.mkdtemp(prefix="ctxkit-kv-", dir=root)) if connector == "example" else None
        slots, self.placement = place(["prefill"] * prefill + ["decode"] * decode,
                                      prefill_visible_devices, decode_visible_devices)
        self.placement["connector"] = connector
        self.placement["kv_storage"] = str(self.storage) if self.storage else None
        self.block_size = GPU_BLOCK_SIZE if self.placement["kind"] == "gpu" else CPU_BLOCK_SIZE
        for slot in slots:
            cfg = kv_transfer_config(connector, slot.role, self.storage, kv_buffer_device)
            if connector == "nixl":
                slot.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(5600 + len(self.servers))
            self.servers.append(self._server(server, seed, f"{slot.role}-{slot.index}", slot,
                                             ["--kv-transfer-config", cfg]))

    @property
    def handoff_log(self) -> Path:
        return self.log_dir / f"{self.name}-handoffs.jsonl"

    def handoffs(self, expect: Optional[int] = None, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The handoff records so far. The router writes a record after it has relayed the last byte, so a client
        can see [DONE] a moment before the record exists: with `expect`, wait (up to timeout_s) for that many."""
        deadline = time.monotonic() + timeout_s
        records = read_jsonl(self.handoff_log)
        while expect is not None and len(records) < expect and time.monotonic() < deadline:
            time.sleep(0.05)
            records = read_jsonl(self.handoff_log)
        return records

    def by_role(self, role: str) -> list[VLLMServer]:
        return [s for s in self.servers if s.name.startswith(role)]

    def router_config(self) -> dict[str, Any]:
        return {"mode": "disaggregated", "model": self.model, "policy": self.policy, "connector": self.connector,
                "instances": {role: [{"name": s.name, "url": s.base_url} for s in self.by_role(role)]
                              for role in ("prefill", "decode")},
                "storage_path": str(self.storage) if self.storage else None, "block_size": self.block_size,
                "kv_bytes_per_token": self.card.kv_bytes_per_token(self.servers[0].dtype),
                "route_log": str(self.route_log), "handoff_log": str(self.handoff_log),
                "cleanup_kv": self.cleanup_kv}

    def stop(self) -> None:
        super().stop()
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)
