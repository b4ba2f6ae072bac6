"""A deployment ctxkit attaches to but does not manage (`backend: topology`): the typed form of a topology file.

The file names the entry point every request goes through (a gateway, a router, one server) and each serving
instance behind it with its role and where its Prometheus metrics are read. Example (docs/scale-out.md has llm-d
and Dynamo ones):

    name: pd-on-two-hosts
    entry_url: http://10.0.0.4:8000           # OpenAI-compatible: /v1/models, /v1/completions
    model: meta-llama/Llama-3.1-8B-Instruct   # optional: what every instance must serve (else learned)
    instances:
      - {name: prefill-0, role: prefill, url: http://10.0.0.5:8100, gpus: 1}
      - {name: decode-0, role: decode, metrics_url: http://10.0.0.6:8081/metrics, gpus: 1}

What can be checked without the network is checked here (names, roles, URLs' form); that every URL answers and
every instance serves one model is checked by ctxkit.backends.topology before anything is sent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROLES = ("aggregated", "prefill", "decode")


class TopologyFileError(ValueError):
    """A topology file that cannot describe a deployment (unreadable, malformed, inconsistent)."""


def _http_url(v: str) -> str:
    u = urlparse(v)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ValueError(f"{v!r} is not an http(s) URL")
    return v.rstrip("/").removesuffix("/v1")     # the server's root: /v1/models, /version and /metrics hang off it


class Instance(BaseModel):
    """One serving instance: its OpenAI server (for /v1/models and /version), its metrics (Prometheus text), or
    both. An instance with metrics alone (a Dynamo worker answers no OpenAI API of its own, only its system port's
    /metrics) is known by the model_name label of its vLLM samples."""
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Literal["aggregated", "prefill", "decode"]
    url: Optional[str] = None
    # Any URL that answers Prometheus text: the instance's own /metrics (the default), or a Prometheus server's
    # /federate with a match[] selector for this instance (target labels such as job and pod are dropped on parse).
    metrics_url: Optional[str] = None
    gpus: float = Field(1, ge=0)       # what it occupies, for per-GPU numbers (0 for one sharing another's GPU)

    _url = field_validator("url", "metrics_url")(lambda v: v if v is None else _http_url(v))

    @model_validator(mode="after")
    def _reachable_somehow(self) -> "Instance":
        if not (self.url or self.metrics_url):
            raise ValueError(f"instance {self.name}: give its url, its metrics_url or both")
        return self

    @property
    def metrics(self) -> str:
        return self.metrics_url or f"{self.url}/metrics"


class Topology(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field("attached", min_length=1)
    entry_url: str
    model: Optional[str] = None
    unit: Literal["GPU", "CPU core set"] = "GPU"     # what `gpus` counts (per-unit goodput divides by their sum)
    instances: list[Instance] = Field(min_length=1)

    _entry = field_validator("entry_url")(lambda v: _http_url(v))

    @model_validator(mode="after")
    def _consistent(self) -> "Topology":
        names = [i.name for i in self.instances]
        if len(set(names)) < len(names):
            raise ValueError(f"instance names must differ: {names}")
        roles = {i.role for i in self.instances}
        if "aggregated" in roles and roles != {"aggregated"}:
            raise ValueError("roles: aggregated instances and prefill/decode instances do not mix in one topology")
        if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
            missing = ({"prefill", "decode"} - roles).pop()
            raise ValueError(f"roles: a disaggregated topology needs a {missing} instance")
        if self.devices <= 0:
            raise ValueError("gpus: the instances occupy nothing (their gpus sum to 0)")
        return self

    @property
    def disaggregated(self) -> bool:
        return self.instances[0].role != "aggregated"

    @property
    def devices(self) -> float:
        return sum(i.gpus for i in self.instances)


def load(path: str | Path) -> Topology:
    """The topology file, checked (TopologyFileError names the file and what is wrong)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise TopologyFileError(f"cannot read topology file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TopologyFileError(f"topology file {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TopologyFileError(f"topology file {path}: expected a mapping (entry_url, instances, ...)")
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise TopologyFileError(f"topology file {path}: {problems}") from None
