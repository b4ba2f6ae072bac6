"""A serving topology's parameters -> its pool of servers behind ctxkit's router (not started)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ctxkit.params import RayParams, ServerParams, TopologyParams
from ctxkit.schedulers.aggregated import AggregatedPool
from ctxkit.schedulers.disaggregated import DisaggregatedPool
from ctxkit.schedulers.pools import ServerPool


def pool_name(spec: TopologyParams) -> str:
    """A name fit for log files: the topology's label in lower case, letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", spec.label.lower()).strip("-") or spec.kind


def build_pool(server: ServerParams, spec: TopologyParams, *, seed: int, log_dir: Path,
               ray: Optional[RayParams] = None) -> ServerPool:
    """The topology's pool, its servers local processes or (with `ray`) placed through Ray when it starts."""
    server = spec.server_for(server)
    if spec.kind == "aggregated":
        return AggregatedPool(server, seed=seed, replicas=spec.replicas, log_dir=log_dir, name=pool_name(spec),
                              policy=spec.policy, ray=ray)
    return DisaggregatedPool(server, seed=seed, prefill=spec.prefill, decode=spec.decode, connector=spec.connector,
                             log_dir=log_dir, name=pool_name(spec), policy=spec.policy,
                             kv_buffer_device=spec.kv_buffer_device, connector_extra=spec.connector_extra,
                             prefill_visible_devices=spec.prefill_visible_devices,
                             decode_visible_devices=spec.decode_visible_devices, ray=ray)
