"""Server-side view: each server's Prometheus /metrics, scraped before and after the measured window (and every
few seconds when asked), parsed with prometheus_client's parser. Deltas of vLLM's counters and histograms sit
under summary.profiling.server beside the client-side numbers."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from prometheus_client.parser import text_string_to_metric_families

# vLLM metric families reported (names without the `vllm:` prefix). Counters and histograms become deltas over
# the window, gauges are reported as last value and peak.
HISTOGRAMS = {
    "time_to_first_token_seconds": "ttft",
    "inter_token_latency_seconds": "itl",
    "request_time_per_output_token_seconds": "tpot",
    "e2e_request_latency_seconds": "e2e",
    "request_queue_time_seconds": "queue",
    "request_prefill_time_seconds": "prefill",
    "request_decode_time_seconds": "decode",
}
COUNTERS = ("prompt_tokens", "generation_tokens", "num_preemptions", "prefix_cache_hits", "prefix_cache_queries",
            "request_success", "prompt_tokens_by_source", "external_prefix_cache_hits",
            "external_prefix_cache_queries", "nixl_bytes_transferred", "nixl_xfer_time_seconds",
            "nixl_num_descriptors", "nixl_post_time_seconds")
GAUGES = ("kv_cache_usage_perc", "num_requests_running", "num_requests_waiting")

Sample = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels without model/engine)
# model_name/engine are vLLM's own; the rest are labels a Prometheus server attaches to what it scraped (an attached
# topology may read an instance through /federate): none of them tells vLLM's samples apart within one instance.
DROP_LABELS = {"model_name", "engine", "job", "instance", "pod", "namespace", "container", "endpoint", "service"}


def parse(text: str) -> dict[Sample, float]:
    """Every sample of the text, keyed by name and labels (model_name/engine dropped and summed over)."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in DROP_LABELS))
            key = (s.name, labels)
            out[key] = out.get(key, 0.0) + float(s.value)
    return out


def cache_config(samples: dict[Sample, float]) -> dict[str, str]:
    """vLLM's cache_config_info gauge: its labels are the KV cache's configuration (block_size, num_gpu_blocks, ...);
    empty when the server exposes none."""
    return next((dict(labels) for (name, labels) in samples if name == "vllm:cache_config_info"), {})


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _delta(after: dict[Sample, float], before: dict[Sample, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def deltas(before: dict[Sample, float], after: dict[Sample, float]) -> dict[str, Any]:
    """vLLM's counters and histograms over the window between two scrapes."""
    out: dict[str, Any] = {}
    for metric, short in HISTOGRAMS.items():
        full = f"vllm:{metric}"
        count = _delta(after, before, f"{full}_count")
        total = _delta(after, before, f"{full}_sum")
        if count or value(after, f"{full}_count"):
            out[f"{short}_count"] = count
            out[f"mean_{short}_ms"] = 1000.0 * total / count if count else None
    for metric in COUNTERS:
        full = f"vllm:{metric}_total"
        names = {n for (n, _) in after if n in (full, f"vllm:{metric}", f"vllm:{metric}_sum")}
        if not names:
            continue
        name = sorted(names)[0]
        label_sets = {ls for (n, ls) in after if n == name}
        if len(label_sets) > 1 or (label_sets and next(iter(label_sets))):
            out[metric] = {",".join(f"{k}={v}" for k, v in ls) or "all": after[(name, ls)] - before.get((name, ls), 0.0)
                           for ls in sorted(label_sets)}
        else:
            out[metric] = _delta(after, before, name)
    for metric in GAUGES:
        full = f"vllm:{metric}"
        if any(n == full for (n, _) in after):
            out[metric] = value(after, full)
    return out


@dataclass
class ServerMetricsCollector:
    """Scrape `fetch()` (a backend's metrics) before and after a window; optionally every `interval_s`."""
    name: str
    fetch: Callable[[], str]
    interval_s: Optional[float] = None
    before: dict[Sample, float] = field(default_factory=dict)
    after: dict[Sample, float] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def _scrape(self) -> dict[Sample, float]:
        try:
            return parse(self.fetch())
        except Exception as exc:  # noqa: BLE001 - a lost scrape is recorded, never fatal
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return {}

    def start(self) -> "ServerMetricsCollector":
        self.before = self._scrape()
        if self.interval_s:
            self._keep(self.before)
            self._thread = threading.Thread(target=self._loop, name=f"metrics-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _keep(self, samples: dict[Sample, float]) -> None:
        """A timeline row of the gauges. t_ns is on the client's clock (perf_counter_ns, as every RequestRecord
        time), so the gauges line up with the requests sent and answered; t_wall_s (wall clock) with other hosts' logs."""
        if samples:
            self.timeline.append({"t_wall_s": time.time(), "t_ns": time.perf_counter_ns(), "server": self.name,
                                  **{g: value(samples, f"vllm:{g}") for g in GAUGES},
                                  # counters, kept as they stand: where one grows, the server preempted or
                                  # finished requests (a scrape can fall between short requests; a counter can't)
                                  "num_preemptions": value(samples, "vllm:num_preemptions_total"),
                                  "requests_finished": value(samples, "vllm:request_success_total")})

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._keep(self._scrape())

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.after = self._scrape()
        if self.interval_s:            # the window's first and last scrapes bound its timeline, however short
            self._keep(self.after)
        result = deltas(self.before, self.after) if self.before and self.after else {}
        if self.timeline:
            for g in GAUGES:
                result[f"peak_{g}"] = max(row[g] for row in self.timeline)
        if self.errors:
            result["scrape_errors"] = self.errors[:5]
        return result
