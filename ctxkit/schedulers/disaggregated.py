"""DisaggregatedPool: P prefill + D decode vLLM servers joined by a KV connector (ExampleConnector through a tmpfs
folder, or NixlConnector), behind ctxkit's router, which sends each request to a prefill instance with max_tokens=1
and then streams it from a decode instance that loads the KV. One handoff record per request goes to
logs/<name>-handoffs.jsonl (see schedulers/broker.py)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from ctxkit.backends.process import free_fixed_port
from ctxkit.backends.vllm_server import VLLMServer
from ctxkit.models import ModelCard
from ctxkit.params import RayParams, ServerParams
from ctxkit.schedulers.broker import kv_transfer_config, read_jsonl
from ctxkit.schedulers.kv_store import block_size_of
from ctxkit.schedulers.placement import place
from ctxkit.schedulers.pools import ServerPool
from ctxkit.schedulers.router import Instance, RouterConfig


class DisaggregatedPool(ServerPool):
    single_hop = False   # each request is prefilled on one server and decoded on another
    def __init__(self, server: ServerParams, *, seed: int, prefill: int, decode: int, connector: str, log_dir: Path,
                 name: str = "disaggregated", policy: str = "least_outstanding",
                 storage_root: Optional[Path] = None, kv_buffer_device: str = "cpu",
                 connector_extra: Optional[dict[str, Any]] = None,
                 prefill_visible_devices: Optional[str] = None, decode_visible_devices: Optional[str] = None,
                 cleanup_kv: bool = True, ray: Optional[RayParams] = None) -> None:
        super().__init__(name, log_dir, server.model, ray)
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
        self.connector_extra = dict(connector_extra or {})
        self.placement["connector_extra"] = self.connector_extra
        # expected KV bytes and ExampleConnector's folder names depend on it: E3 variants sweep it (--block-size)
        self.block_size = block_size_of(server.extra_args, self.placement["kind"])
        self.roles: dict[str, str] = {}
        for slot in slots:
            cfg = kv_transfer_config(connector, slot.role, self.storage, kv_buffer_device, connector_extra)
            # a free port each from 5600, so that a second run on the host avoids the ports the first one's servers
            # hold; two runs choosing in the same moment, before either binds, could still pick the same one
            if connector == "nixl":
                slot.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(free_fixed_port(5600, self._side_ports()))
            # E3's pool keeps the plain names (prefill-0, decode-0); other pools prefix theirs, so that several
            # topologies in one run keep their logs apart
            label = f"{slot.role}-{slot.index}" if name == "disaggregated" else f"{name}-{slot.role}-{slot.index}"
            self.roles[label] = slot.role
            self.servers.append(self._server(server, seed, label, slot,
                                             ["--kv-transfer-config", cfg]))
        self.name_servers()

    def _side_ports(self) -> set[int]:
        return {int(s.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) for s in self.servers
                if "VLLM_NIXL_SIDE_CHANNEL_PORT" in s.env}

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
        return [s for s in self.servers if self.roles[s.name] == role]

    def router_config(self) -> RouterConfig:
        return RouterConfig(mode="disaggregated", model=self.model, policy=self.policy, connector=self.connector,
                            instances={role: [Instance(name=s.name, url=s.base_url) for s in self.by_role(role)]
                                       for role in ("prefill", "decode")},
                            storage_path=str(self.storage) if self.storage else None, block_size=self.block_size,
                            kv_bytes_per_token=self.card.kv_bytes_per_token(self.servers[0].dtype),
                            route_log=str(self.route_log), handoff_log=str(self.handoff_log),
                            cleanup_kv=self.cleanup_kv)

    def stop(self) -> None:
        super().stop()
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)
