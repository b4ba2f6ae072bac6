"""What the serving topologies share: ServerPool, a set of vLLM servers behind ctxkit's router, usable as one backend
(context manager, base_url, model). AggregatedPool (schedulers/aggregated.py) and DisaggregatedPool
(schedulers/disaggregated.py) build on it; this module imports neither. Servers start in parallel (each vLLM start is ~35 s on the CPU tier);
everything stops on exit, also on error.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from prometheus_client.parser import text_string_to_metric_families

from ctxkit.backends.base import ServingBackend
from ctxkit.backends.vllm_server import VLLMServer
from ctxkit.models import ModelCard
from ctxkit.params import RayParams, ServerParams
from ctxkit.schedulers.broker import read_jsonl
from ctxkit.schedulers.placement import Slot
from ctxkit.schedulers.router import RouterConfig, RouterProcess


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


class ServerPool(ServingBackend):
    """vLLM servers ctxkit owns, behind one router process; subclasses place the servers and configure the router."""

    mode = "real"

    def __init__(self, name: str, log_dir: Path, model: str, ray: Optional[RayParams] = None) -> None:
        self.name = name
        self.log_dir = Path(log_dir)
        self.model = ModelCard.load(model).name
        self.servers: list[VLLMServer] = []
        self.router: Optional[RouterProcess] = None
        self.placement: dict[str, Any] = {}
        self.ray_params = ray                         # set: the servers are placed through Ray at start
        self.ray: Optional[Any] = None                # ... and this holds the cluster and placement group

    def name_servers(self) -> None:
        """Each server's name in its placement record, beside its role: readers take a server's role from there,
        never from its name (an aggregated topology may be called "prefill-heavy")."""
        for record, srv in zip(self.placement["servers"], self.servers):
            record["name"] = srv.name

    def _server(self, server: ServerParams, seed: int, name: str, slot: Slot, extra: list[str]) -> VLLMServer:
        s = VLLMServer.from_params(server, seed=seed, name=name, log_dir=self.log_dir, extra_args=extra,
                                   env=slot.env)
        if slot.gpu_memory_utilization is not None:   # servers sharing a GPU: each gets its fraction at most
            s.gpu_memory_utilization = min(slot.gpu_memory_utilization, server.gpu_memory_utilization or 1.0)
        return s

    def router_config(self) -> RouterConfig:
        raise NotImplementedError  # abstract: each topology builds its router configuration

    def start(self) -> "ServerPool":
        try:
            if self.ray_params is not None and self.ray is None:
                self._place_on_ray(self.ray_params)
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
        if self.ray is not None:
            self.ray.close()
            self.ray = None

    def _place_on_ray(self, params: RayParams) -> None:
        """The same servers, each in a Ray bundle with the GPUs its local placement gave it (a GPU shared by k
        servers counts 1/k to each); the local device choice itself is Ray's to make."""
        from ctxkit.schedulers.ray_launcher import bundle_gpus, place_on_ray
        devices = [str(s.env.get("CUDA_VISIBLE_DEVICES", "")) if self.placement.get("kind") == "gpu" else ""
                   for s in self.servers]
        gpus = bundle_gpus(devices, params.gpus_per_server)
        self.servers, self.ray = place_on_ray(self.servers, params, gpus,
                                              shared_folder=getattr(self, "storage", None) is not None)
        self.placement = {**self.placement, "launcher": "ray",
                          "ray": {"address": params.address, "strategy": params.strategy, "gpus": gpus}}

    def metric_sources(self) -> dict[str, Any]:
        """The servers' own /metrics (the router's holds only its in-flight count, see router_in_flight)."""
        return {s.name: s.metrics for s in self.servers}

    def router_in_flight(self) -> float:
        """Requests the router holds now (also between a prefill and its decode, where no server sees them)."""
        if self.router is None:
            return 0.0
        for family in text_string_to_metric_families(self.router.metrics()):
            for sample in family.samples:
                if sample.name == "ctxkit_router_requests_in_flight":
                    return float(sample.value)
        return 0.0

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
