"""The measuring engine every experiment shares: send a workload on an arrival process against a started backend,
scrape the servers' metrics around the measured window, and summarize what came back.

The window: warmup requests first (outside it, so neither the client's nor the servers' numbers include them),
then a scrape of every server's /metrics, the measured requests, and a scrape after. Records stream to the caller's
JSONL writer as they complete, so a crash loses at most the requests in flight.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from ctxkit.backends import ServingBackend
from ctxkit.backends.base import ServerDied
from ctxkit.collectors.latency import SLO, client_vs_server, summarize
from ctxkit.collectors.server_metrics import ServerMetricsCollector
from ctxkit.load.arrivals import StopFn, arrivals_of, run_load
from ctxkit.load.progress import Progress
from ctxkit.load.workers import lag_by_worker, run_load_workers
from ctxkit.load.workloads import WorkItem
from ctxkit.params import LoadParams
from ctxkit.records import DISCONNECT, HTTP_ERROR, TRUNCATED, JsonlWriter, RequestRecord


def measure(backend: ServingBackend, items: list[WorkItem], load: LoadParams, *, seed: int, timeout_s: float,
            slo: Optional[SLO], out: Optional[JsonlWriter] = None, warmup: Optional[list[WorkItem]] = None,
            metrics_interval_s: Optional[float] = None, label: str = "bench",
            tags: Optional[dict[str, Any]] = None, stop: Optional[StopFn] = None,
            drain_s: Optional[float] = None) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Send `items` on the load's arrival process (`stop` and `drain_s` as run_load has them: one process, open
    loop). Returns the records and the window's profiling:
    `latency` (ctxkit's metrics, vLLM's under `latency.vllm`), `server` (each server's metric deltas),
    `client_vs_server` (client minus server means), `timeline` (interval scrapes) and, with load.workers > 1,
    `client_workers` (each worker's send lag)."""
    arrivals = arrivals_of(load, seed)
    progress = Progress(len(items), label)

    def on_record(rec: RequestRecord, done: int, total: int) -> None:
        rec.route = rec.route or backend.name
        rec.tags.update(tags or {})
        if out is not None:
            out.write(rec)
        progress.update(rec)

    if (stop is not None or drain_s is not None) and load.workers > 1:
        raise ValueError("stop and drain_s end one process's window: not with load.workers > 1")
    records = run_load(backend.base_url, backend.model, [], arrivals, warmup=warmup,
                       max_concurrency=load.max_concurrency, timeout_s=timeout_s,
                       on_record=on_record) if warmup else []
    collectors = [ServerMetricsCollector(name, fetch, metrics_interval_s).start()
                  for name, fetch in backend.metric_sources().items()]
    try:
        if load.workers > 1:
            records += run_load_workers(backend.base_url, backend.model, items, arrivals, workers=load.workers,
                                        duration_s=load.duration_s, timeout_s=timeout_s, on_record=on_record)
        else:
            records += run_load(backend.base_url, backend.model, items, arrivals, duration_s=load.duration_s,
                                stop=stop, drain_s=drain_s, max_concurrency=load.max_concurrency,
                                timeout_s=timeout_s, on_record=on_record)
    finally:
        progress.close()
        server = {c.name: c.stop() for c in collectors}
    check_alive(backend, records)
    latency = summarize(records, slo)
    timeline = [row for c in collectors for row in c.timeline]
    prof = {"latency": latency, "server": server, "timeline": timeline,
            "client_vs_server": client_vs_server(latency, server, backend.single_hop)}
    if load.workers > 1:
        prof["client_workers"] = lag_by_worker(records)
    return records, prof


DEATH_GRACE_S = 10.0
LOST = (DISCONNECT, HTTP_ERROR, TRUNCATED)    # what a server dying mid-window does to its requests


def check_alive(backend: ServingBackend, records: list[RequestRecord]) -> None:
    """A managed server (or pool) that died during the window ends the experiment here, quoting its log: the
    records of the window are already in requests.jsonl, and the caller's context manager stops what is left.
    A window that lost requests (connections broken, errors, streams cut short) asks until the server answers its
    health check again or is gone (up to DEATH_GRACE_S): a killed server's workers drop the connections at once,
    but its leader process, the one ctxkit watches, can take a moment longer to exit (releasing its memory), and a
    window checked in between passed for a finished point whose requests had failed (E2's --resume then skipped
    it)."""
    alive = backend.alive()
    if alive is None:                 # attached: nothing ctxkit started to watch
        return
    if alive and any(r.status in LOST for r in records):
        deadline = time.monotonic() + DEATH_GRACE_S
        while backend.alive() and not backend.healthy():
            if time.monotonic() >= deadline:
                raise ServerDied(f"{backend.name} stopped answering during the measured window: connections lost and "
                                 f"no answer to /health for {DEATH_GRACE_S:g} s")
            time.sleep(0.2)
    if not backend.alive():
        raise ServerDied(f"{backend.name} died during the measured window: {backend.death_note()}")
