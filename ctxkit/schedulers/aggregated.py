"""AggregatedPool: N aggregated vLLM servers behind ctxkit's router, each request routed round robin or to the
instance with the fewest outstanding requests; every routing decision goes to the route log
(logs/<name>-routes.jsonl: request id, instance, pool, times)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ctxkit.params import RayParams, ServerParams
from ctxkit.schedulers.placement import place
from ctxkit.schedulers.pools import ServerPool
from ctxkit.schedulers.router import Instance, RouterConfig


class AggregatedPool(ServerPool):
    def __init__(self, server: ServerParams, *, seed: int, replicas: int, log_dir: Path, name: str = "aggregated",
                 policy: str = "least_outstanding", ray: Optional[RayParams] = None) -> None:
        super().__init__(name, log_dir, server.model, ray)
        slots, self.placement = place(["aggregated"] * replicas)
        self.policy = policy
        self.servers = [self._server(server, seed, f"{name}-{i}", slot, []) for i, slot in enumerate(slots)]
        self.name_servers()

    def router_config(self) -> RouterConfig:
        return RouterConfig(mode="aggregated", model=self.model, policy=self.policy,
                            instances={"pool": [Instance(name=s.name, url=s.base_url) for s in self.servers]},
                            route_log=str(self.route_log))
