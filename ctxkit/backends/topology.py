"""AttachedTopology: a deployment ctxkit measures but does not manage (`backend: topology`, ctxkit.deployment).

Requests go through the topology's entry point; every instance's metrics are scraped under its own name, so the
server-side views (histogram deltas, gauge timelines, preemptions, NIXL counters) work as with ctxkit's own pools.
Starting it only checks it: the entry point and every instance answer like OpenAI servers, they all serve one
model, and every metrics URL answers Prometheus text. Stopping it does nothing: ctxkit stops only what it starts.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

from prometheus_client.parser import text_string_to_metric_families

from ctxkit import deployment
from ctxkit.backends.base import BackendError, ServingBackend, http_get, served_models


class TopologyError(BackendError):
    """An attached deployment that does not answer as its topology file says (names the instance)."""


def metric_models(text: str) -> list[str]:
    """The models vLLM's own samples in a Prometheus text name (their model_name label)."""
    found: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("vllm:"):
            found |= {s.labels["model_name"] for s in family.samples if "model_name" in s.labels}
    return sorted(found)


def metric_targets(text: str) -> set[str]:
    """The scrape targets (Prometheus' pod / instance labels) that vLLM's samples in a federation answer come from;
    empty for a server's own /metrics, which carries no such labels."""
    found: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("vllm:"):
            found |= {f"{s.labels.get('pod', '')}/{s.labels.get('instance', '')}" for s in family.samples
                      if "pod" in s.labels or "instance" in s.labels}
    return found


@dataclass(frozen=True)
class ScrapedInstance:
    """One instance of an attached deployment, as far as ctxkit reaches it: its name, role and metrics."""
    name: str
    role: str
    metrics: Callable[[], str]


def _fetcher(url: str) -> Callable[[], str]:
    def fetch() -> str:
        status, body = http_get(url, timeout=5.0)
        if status != 200:
            raise BackendError(f"{url} answered HTTP {status}")
        return body
    return fetch


class AttachedTopology(ServingBackend):
    def __init__(self, spec: deployment.Topology, *, name: str = "topology") -> None:
        self.spec = spec
        self.name = name
        self.base_url = spec.entry_url.removesuffix("/v1")
        self.model = spec.model or ""
        self.mode = "real"
        self.single_hop = not spec.disaggregated
        self.survey: dict[str, Any] = {}

    @classmethod
    def from_file(cls, path: str, *, name: str = "topology", model: Optional[str] = None) -> "AttachedTopology":
        """The file's topology; `model` (e.g. `ctxkit bench --model`) overrides the file's `model`."""
        spec = deployment.load(path)
        return cls(spec.model_copy(update={"model": model}) if model else spec, name=name)

    # --- the check before anything is sent --------------------------------------------------------------
    def _instance(self, inst: deployment.Instance) -> dict[str, Any]:
        who = f"instance {inst.name} ({inst.role})"
        models = served_models(inst.url, f"{who} ({inst.url})", TopologyError) if inst.url else []
        try:
            status, body = http_get(inst.metrics, timeout=5.0)
        except OSError as exc:
            raise TopologyError(f"{who}: metrics at {inst.metrics} unreachable: {getattr(exc, 'reason', exc)}") \
                from None
        if status != 200 or "# TYPE" not in body:
            raise TopologyError(f"{who}: {inst.metrics} does not answer Prometheus text (HTTP {status})")
        targets = metric_targets(body)
        if len(targets) > 1:
            raise TopologyError(f"{who}: {inst.metrics} holds vLLM samples of {len(targets)} targets "
                                f"({', '.join(sorted(targets)[:4])}): select one instance (e.g. match[]={{pod=...}})")
        if not inst.url:
            models = metric_models(body)
            if not models:
                raise TopologyError(f"{who}: no url, and its metrics ({inst.metrics}) name no model (no vllm: "
                                    "sample with a model_name label): give its url")
        version = _At(inst.url).version() if inst.url else {"error": "no url: known by its metrics alone"}
        return {"name": inst.name, "role": inst.role, "url": inst.url, "metrics_url": inst.metrics,
                "gpus": inst.gpus, "models": models, "version": version}

    def check(self) -> dict[str, Any]:
        """Every URL answers and every instance serves the one model; returns what each answered (for
        run_metadata.json). Raises TopologyError naming the first instance that does not."""
        entry = served_models(self.base_url, f"entry point {self.spec.name} ({self.base_url})", TopologyError)
        with ThreadPoolExecutor(min(8, len(self.spec.instances))) as pool:
            found = list(pool.map(self._instance, self.spec.instances))
        model = self.spec.model or (entry[0] if entry else "")
        if model not in entry:
            raise TopologyError(f"entry point {self.base_url} does not serve {model!r} (it serves {entry})")
        for inst in found:
            if model not in inst["models"]:
                raise TopologyError(f"instance {inst['name']} ({inst['url']}) serves {inst['models']}, not "
                                    f"{model!r}: one topology serves one model")
        modes = {"simulated" if str(i["version"].get("version", "")).startswith("simulated") else "real"
                 for i in found}
        self.model = model
        self.mode = "simulated" if "simulated" in modes else "real"
        self.survey = {"name": self.spec.name, "entry_url": self.base_url, "model": model, "mode": self.mode,
                       "unit": self.spec.unit, "devices": self.spec.devices, "instances": found}
        return self.survey

    # --- ServingBackend --------------------------------------------------------------------------------
    def start(self) -> "AttachedTopology":
        self.check()
        return self

    def metric_sources(self) -> dict[str, Any]:
        return {i.name: _fetcher(i.metrics) for i in self.spec.instances}

    def by_role(self, role: str) -> list[ScrapedInstance]:
        """The instances of one role (aggregated, prefill, decode), each with its metrics, as ctxkit's own pools
        give theirs (E3 reads the decode servers' KV counters)."""
        return [ScrapedInstance(i.name, i.role, _fetcher(i.metrics)) for i in self.spec.instances if i.role == role]

    def version(self) -> dict[str, Any]:
        """The first instance's /version that answers one (the entry point may be a gateway that does not)."""
        for inst in self.spec.instances:
            if inst.url:
                return _At(inst.url).version()
        return _At(self.base_url).version()

    @property
    def placement(self) -> dict[str, Any]:
        """Where its servers run, in the shape of ctxkit's own pools' record (ctxkit.schedulers.placement), from
        the topology file's word: kind "attached", so no GPU of this host is taken for one of its."""
        return {"kind": "attached", "unit": self.spec.unit, "devices": self.spec.devices,
                "reason": f"attached deployment {self.spec.name}: {self.spec.devices:g} {self.spec.unit}(s) "
                          "as its topology file states",
                "servers": [{"name": i.name, "role": i.role, "gpus": i.gpus} for i in self.spec.instances]}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "topology": self.spec.model_dump(), "attached": True,
                "survey": self.survey, "version": self.version()}


class _At(ServingBackend):
    """Just a base URL, to ask one instance the questions every backend answers (/version)."""

    def __init__(self, url: str) -> None:
        self.base_url = url
