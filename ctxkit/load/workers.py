"""Load from several processes on one host: one schedule, split across worker processes.

One client process (one asyncio loop) parses every streamed chunk of every request in flight; past a few hundred
requests in flight it falls behind its own schedule (the send lag, t_send - t_sched, grows; E4 flags such
probes). Here the absolute schedule is computed once, as for one process (the same offsets from the same seed), and
request i goes to worker i mod N. Every worker is its own process with its own event loop; all start on one t0 of
the host's monotonic clock (perf_counter_ns is CLOCK_MONOTONIC on Linux, one clock for every process), after all
of them have reported ready (imports done; their HTTP connections open at the first sends, as in one process).
Records go back over each worker's own socket, from a sender thread so that a slow parent never blocks a worker's
event loop, into the caller's on_record (the run's requests.jsonl, the progress bar), tagged with their worker.
Closed loop (concurrency C): client c runs on worker c mod N and sends items i with i mod C = c, as one process's
C clients would share them.

A stop rule (the goodput search's early stop) runs here, in the parent, on the finished records as they arrive:
the parent sees no request in flight, so it decides from finished ones only (a miss counts once it has finished,
not as soon as its age makes it certain). Its order ("drain": send no more; "cancel": cut what is in flight) goes
to every worker, whose own run_load obeys it before its next send and while draining.

Workers die with the parent (PR_SET_PDEATHSIG) and exit when their socket breaks: none keeps loading a server
after the run is gone. Not here: a cap on requests in flight (max_concurrency), which needs one view of everything
in flight; it is refused with workers > 1.
"""
from __future__ import annotations

import dataclasses
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Optional, cast

import numpy as np

from ctxkit.backends.process import die_with_parent
from ctxkit.load.arrivals import ArrivalError, Arrivals, ProgressFn, StopFn, run_load
from ctxkit.load.workloads import WorkItem
from ctxkit.records import RequestRecord

READY_TIMEOUT_S = 120.0        # a worker imports ctxkit and aiohttp before it reports ready
START_LEAD_NS = 200_000_000    # t0 this far after the last worker is ready: every one is waiting on it by then


class WorkerError(RuntimeError):
    """A load worker failed or died; the others are stopped."""


def split(items: list[WorkItem], arrivals: Arrivals, workers: int) -> list[tuple[list[WorkItem], Arrivals]]:
    """Each worker's items and arrival process: request i, with its due time from the one schedule, to worker
    i mod N (open loop, as a 'trace' of absolute offsets); closed loop: client c to worker c mod N with the items
    i mod C = c, so every client has its share of the work and the loop holds C until the end."""
    if workers < 1:
        raise ArrivalError(f"workers must be >= 1, got {workers}")
    if arrivals.kind == "concurrency":
        if arrivals.concurrency < workers:
            raise ArrivalError(f"concurrency {arrivals.concurrency} < {workers} workers: each worker needs a client")
        c = arrivals.concurrency
        clients = [[j for j in range(c) if j % workers == k] for k in range(workers)]
        return [([it for i, it in enumerate(items) if i % c in mine], dataclasses.replace(arrivals, concurrency=len(mine)))
                for mine in clients]
    offsets = arrivals.offsets_s(items)
    if any(math.isinf(o) for o in offsets):
        raise ArrivalError("a schedule with infinite offsets cannot be split")
    timed = [dataclasses.replace(it, arrival_ms=off * 1000.0) for it, off in zip(items, offsets)]
    return [(timed[k::workers], Arrivals("trace", seed=arrivals.seed)) for k in range(workers)]


def _worker(conn: Connection) -> None:
    """One worker process: take its share, report ready, wait for the shared start (t0 from the parent), send,
    stream records back through a sender thread."""
    k, base_url, model, items, arrivals, timeout_s, duration_s, extra, stoppable, drain_s = conn.recv()
    outbox: queue.Queue[Any] = queue.Queue()
    queued: set[int] = set()
    order: list[Optional[str]] = [None]      # the parent's stop rule's last word: None, "drain" or "cancel"

    def listener() -> None:
        while True:
            try:
                order[0] = conn.recv()
            except (EOFError, OSError):      # the run is over (or the parent gone: the sender exits then)
                return

    def sender() -> None:
        while (msg := outbox.get()) is not None:
            try:
                conn.send(msg)
            except OSError:                  # the parent is gone: stop loading the server now
                os._exit(3)

    def on_record(rec: RequestRecord, done: int, total: int) -> None:
        rec.tags["worker"] = k
        queued.add(id(rec))
        outbox.put(("record", rec))

    thread = threading.Thread(target=sender, name="ctxkit-load-sender", daemon=True)
    thread.start()
    try:
        outbox.put(("ready", None))
        t0_ns = conn.recv()
        if stoppable:
            threading.Thread(target=listener, name="ctxkit-load-listener", daemon=True).start()
        records = run_load(base_url, model, items, arrivals, timeout_s=timeout_s, duration_s=duration_s,
                           on_record=on_record, extra=extra, t0_ns=t0_ns,
                           stop=(lambda done, live, now: order[0]) if stoppable else None, drain_s=drain_s)
        for rec in records:                  # anything that ended without passing through on_record
            if id(rec) not in queued:
                on_record(rec, 0, 0)
        outbox.put(("done", None))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the others
        outbox.put(("error", traceback.format_exc()[-3000:]))
    finally:
        outbox.put(None)
        thread.join()
        conn.close()


def run_load_workers(base_url: str, model: str, items: list[WorkItem], arrivals: Arrivals, *, workers: int,
                     timeout_s: float = 120.0, duration_s: Optional[float] = None,
                     on_record: Optional[ProgressFn] = None, extra: Optional[dict[str, Any]] = None,
                     max_concurrency: Optional[int] = None, stop: Optional[StopFn] = None,
                     drain_s: Optional[float] = None) -> list[RequestRecord]:
    """run_load's measured window from `workers` processes (warmup stays with the caller, in one process).
    Returns every record, tagged `worker`, in the order they reached this process. `stop` is asked here, with the
    finished records and none in flight (see the module's notes), after each record arrives; `drain_s` bounds each
    worker's drain as in run_load. Workers are stopped on every exit path: a failed worker, an exception here, or
    Ctrl-C."""
    arrivals.check()
    if max_concurrency is not None:
        raise ArrivalError("max_concurrency caps requests in flight in one process; with workers > 1 it is not "
                           "supported (set workers: 1, or drop the cap)")
    shares = split(items, arrivals, workers)
    conns: list[Connection] = []
    procs: list[subprocess.Popen[bytes]] = []
    records: list[RequestRecord] = []
    try:
        for k, (share, arr) in enumerate(shares):
            conn, proc = _spawn()
            conns.append(conn)
            procs.append(proc)
            _tell(k, conn, (k, base_url, model, share, arr, timeout_s, duration_s, extra, stop is not None, drain_s))
        _collect(procs, conns, "ready", READY_TIMEOUT_S, records, on_record, len(items))
        t0_ns = time.perf_counter_ns() + START_LEAD_NS
        for k, c in enumerate(conns):
            _tell(k, c, t0_ns)
        _collect(procs, conns, "done", _window_cap(arrivals, items, timeout_s, duration_s), records, on_record,
                 len(items), stop)
    finally:
        _stop(procs)
        for c in conns:
            c.close()
    return records


def _tell(k: int, conn: Connection, msg: Any) -> None:
    try:
        conn.send(msg)
    except OSError as exc:
        raise WorkerError(f"load worker {k} is gone ({exc})") from None


def _window_cap(arrivals: Arrivals, items: list[WorkItem], timeout_s: float,
                duration_s: Optional[float]) -> Optional[float]:
    """How long the workers may take before one is taken for wedged: the last due time (or duration_s) plus one
    request timeout and a minute; a closed loop without duration_s has no bound known in advance."""
    if arrivals.kind == "concurrency":
        return duration_s + timeout_s + 60.0 if duration_s else None
    last = max(arrivals.offsets_s(items), default=0.0)
    return min(last, duration_s or last) + timeout_s + 60.0


def _spawn() -> tuple[Connection, subprocess.Popen[bytes]]:
    """A worker as a plain child process (`python -m ctxkit.load.workers FD`) joined by a socket pair: not
    multiprocessing's spawn, which also starts a resource-tracker process that outlives the run."""
    mine, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ctxkit.load.workers", str(theirs.fileno())],
                                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)   # a killed parent takes its workers along
    finally:
        theirs.close()
    return Connection(mine.detach()), proc


def _collect(procs: list[subprocess.Popen[bytes]], conns: list[Connection], until: str, timeout_s: Optional[float],
             records: list[RequestRecord], on_record: Optional[ProgressFn], total: int,
             stop: Optional[StopFn] = None) -> None:
    """Read the workers' pipes until every worker has said `until`; records go to on_record as they come, and
    `stop` hears of each: a new order from it goes to every worker still sending."""
    waiting = set(range(len(procs)))
    told: Optional[str] = None
    measured = sum(not r.warmup for r in records)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    while waiting:
        ready = wait([conns[k] for k in waiting], timeout=0.5)
        for ready_one in ready:
            conn = cast(Connection, ready_one)       # wait() was given only connections
            k = conns.index(conn)
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):       # the worker's end closed: it died
                raise WorkerError(f"load worker {k} exited (code {procs[k].poll()}) before '{until}'") from None
            if kind == "error":
                raise WorkerError(f"load worker {k} failed:\n{payload}")
            if kind == "record":
                records.append(payload)
                measured += not payload.warmup
                if on_record:
                    on_record(payload, measured, total)
                order = stop(records, [], time.perf_counter_ns()) if stop else None
                if order and order != told and told != "cancel":
                    told = order
                    for j in waiting:
                        try:
                            conns[j].send(order)
                        except OSError:       # it finished and closed its end before its "done" was read
                            pass
            elif kind == until:
                waiting.discard(k)
        if not ready and deadline and time.monotonic() > deadline:
            raise WorkerError(f"load workers {sorted(waiting)} not '{until}' after {timeout_s:g} s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def lag_by_worker(records: list[RequestRecord]) -> list[dict[str, Any]]:
    """Per worker: measured requests sent and their send lag (t_send - t_sched) p50, p99 and max in ms."""
    by: dict[int, list[float]] = {}
    for r in records:
        if r.warmup or "worker" not in r.tags or not r.t_sched_ns or not r.t_send_ns:
            continue
        by.setdefault(int(r.tags["worker"]), []).append((r.t_send_ns - r.t_sched_ns) / 1e6)
    return [{"worker": k, "sent": len(v), "send_lag_p50_ms": float(np.percentile(v, 50)),
             "send_lag_p99_ms": float(np.percentile(v, 99)), "send_lag_max_ms": float(max(v))}
            for k, v in sorted(by.items())]


if __name__ == "__main__":
    _worker(Connection(int(sys.argv[1])))
