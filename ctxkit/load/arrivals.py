"""Arrival processes and the load runner.

Open loop (poisson, gamma, constant, trace): every request has an absolute due time on one monotonic clock
(t0 + offset, perf_counter_ns), so sleeps never accumulate drift; `max_concurrency` caps requests in flight (a
request that waits for a slot is sent late, and client lag = t_send - t_sched shows it). Closed loop
(concurrency C): C workers, each sending its next request as soon as its previous one ends.
Warmup requests go first, are marked `warmup` and excluded from every metric. A run stops when its requests are
done, or when `duration_s` has passed (no new request is sent after that).
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ctxkit.completions import CompletionRequest, encode, new_session, run_coro, stream_request
from ctxkit.load.workloads import WorkItem
from ctxkit.params import LoadParams
from ctxkit.records import CANCELLED, RequestRecord

KINDS = ("poisson", "gamma", "constant", "trace", "concurrency")


class ArrivalError(ValueError):
    pass


@dataclass(frozen=True)
class Arrivals:
    kind: str = "poisson"
    rate: float = math.inf          # requests/s (poisson, gamma, constant); inf: all at once
    burstiness: float = 1.0         # gamma shape; 1.0 is Poisson
    concurrency: int = 1            # closed loop
    seed: int = 0

    def check(self) -> "Arrivals":
        if self.kind not in KINDS:
            raise ArrivalError(f"unknown arrival process {self.kind!r}: {', '.join(KINDS)}")
        if self.kind in ("poisson", "gamma", "constant") and not self.rate > 0:
            raise ArrivalError(f"request rate must be > 0 (inf for all at once), got {self.rate}")
        if self.kind == "gamma" and not self.burstiness > 0:
            raise ArrivalError(f"burstiness must be > 0, got {self.burstiness}")
        if self.kind == "concurrency" and self.concurrency < 1:
            raise ArrivalError(f"concurrency must be >= 1, got {self.concurrency}")
        return self

    def offsets_s(self, items: list[WorkItem]) -> list[float]:
        """Due time of each request in seconds from the start of the measured window (empty for no items)."""
        n = len(items)
        if n == 0:
            return []
        if self.kind == "trace":
            if any(it.arrival_ms is None for it in items):
                raise ArrivalError("trace arrivals need a trace workload (every item with a timestamp)")
            return [float(it.arrival_ms or 0.0) / 1000.0 for it in items]
        if math.isinf(self.rate) or self.kind == "concurrency":
            return [0.0] * n
        if self.kind == "constant":
            return [i / self.rate for i in range(n)]
        rng = np.random.default_rng(self.seed)
        shape = 1.0 if self.kind == "poisson" else self.burstiness
        gaps = rng.gamma(shape, 1.0 / (self.rate * shape), size=n)
        gaps[0] = 0.0  # the first request goes at t0
        return list(np.cumsum(gaps))


def arrivals_of(load: LoadParams, seed: int) -> Arrivals:
    """The arrival process a load's parameters describe (request_rate null: all at once)."""
    rate = math.inf if load.request_rate is None else load.request_rate
    return Arrivals(load.arrival, rate, load.burstiness, load.concurrency, seed).check()


ProgressFn = Callable[[RequestRecord, int, int], None]
# Decides, before each send and while draining, whether an open-loop window ends now: (finished records, live
# in-flight records, now_ns) -> None to go on, "drain" to stop sending and let what is in flight finish, "cancel"
# to stop sending and cancel what is in flight (kept as status `cancelled`).
StopFn = Callable[[list[RequestRecord], list[RequestRecord], int], Optional[str]]
SPIN_NS = 2_000_000


async def sleep_until(due_ns: int) -> None:
    """Wake at due_ns on perf_counter_ns. asyncio's timers wake up to ~1 ms late (epoll's millisecond timeout), so
    sleep until 2 ms before, then yield to the loop (sleep(0)) until due: other requests keep streaming meanwhile."""
    while True:
        remaining = due_ns - time.perf_counter_ns()
        if remaining <= 0:
            return
        await asyncio.sleep((remaining - SPIN_NS) / 1e9 if remaining > SPIN_NS else 0)


async def _run(base_url: str, model: str, items: list[WorkItem], arrivals: Arrivals, *, warmup: list[WorkItem],
               max_concurrency: Optional[int], timeout_s: float, duration_s: Optional[float],
               on_record: Optional[ProgressFn], extra: Optional[dict[str, Any]], stop: Optional[StopFn] = None,
               drain_s: Optional[float] = None, t0_ns: Optional[int] = None) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    live: dict[int, RequestRecord] = {}      # in flight, by id(), as stream_request fills them in
    total = len(items)
    done = [0]  # measured requests finished so far

    def req(it: WorkItem, sched_ns: int, is_warmup: bool) -> CompletionRequest:
        return CompletionRequest(it.request_id, it.prompt, it.max_tokens, t_sched_ns=sched_ns, warmup=is_warmup,
                                 extra={**(extra or {}), **it.body})

    async with new_session() as session:
        async def send(it: WorkItem, sched_ns: int, is_warmup: bool = False,
                       request: Optional[CompletionRequest] = None, body: Optional[bytes] = None) -> RequestRecord:
            rec = await stream_request(session, base_url, model, request or req(it, sched_ns, is_warmup), timeout_s,
                                       started=lambda r: live.__setitem__(id(r), r), body=body)
            live.pop(id(rec), None)
            rec.tags.update(it.tags)
            records.append(rec)
            done[0] += 0 if is_warmup else 1
            if on_record:
                on_record(rec, done[0], total)
            return rec

        # Warmup: at the measured concurrency (closed loop) or one at a time, never counted.
        width = arrivals.concurrency if arrivals.kind == "concurrency" else 1
        for i in range(0, len(warmup), width):
            await asyncio.gather(*(send(it, time.perf_counter_ns(), True) for it in warmup[i:i + width]))

        # 5 ms lead so the first due time is not already past; load workers share a start (ctxkit.load.workers)
        t0 = t0_ns if t0_ns is not None else time.perf_counter_ns() + 5_000_000
        stop_ns = t0 + int(duration_s * 1e9) if duration_s else None

        if arrivals.kind == "concurrency":
            queue = list(items)

            async def worker() -> None:
                while queue:
                    now = time.perf_counter_ns()
                    if stop_ns and now >= stop_ns:
                        return
                    await send(queue.pop(0), max(now, t0))
            await asyncio.gather(*(worker() for _ in range(arrivals.concurrency)))
            return records

        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None

        async def capped(it: WorkItem, due: int, request: CompletionRequest, body: bytes) -> None:
            if sem is None:
                await send(it, due, request=request, body=body)
                return
            async with sem:
                await send(it, due, request=request, body=body)

        tasks = []
        for it, off in zip(items, arrivals.offsets_s(items)):
            due = t0 + int(off * 1e9)
            if stop_ns and due >= stop_ns:
                break
            request = req(it, due, False)
            body = encode(model, request)           # before it is due: a long prompt's encoding is not send lag
            await sleep_until(due)
            if stop is not None and stop(records, list(live.values()), time.perf_counter_ns()):
                break
            tasks.append(asyncio.create_task(capped(it, due, request, body)))
            await asyncio.sleep(0)                  # let it go out before the next one is encoded
        by_id = {it.request_id: it for it in items}
        for rec in await _drain(tasks, live, records, stop, drain_s):
            # cut off in flight: kept as the finished ones are (their item's tags, the caller's on_record: E5's
            # hold levels and E4's backlogs reach requests.jsonl too)
            rec.tags.update(by_id[rec.request_id].tags if rec.request_id in by_id else {})
            done[0] += 0 if rec.warmup else 1
            if on_record:
                on_record(rec, done[0], total)
    return records


async def _drain(tasks: list[asyncio.Task[None]], live: dict[int, RequestRecord], records: list[RequestRecord],
                 stop: Optional[StopFn], drain_s: Optional[float]) -> list[RequestRecord]:
    """Wait for the requests in flight; with a stop rule, until it says stop or drain_s has passed, then cancel
    the rest. Cancelled requests are kept (status cancelled, partial times): they are the backlog, added to
    `records` and returned."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.perf_counter_ns() + int(drain_s * 1e9) if drain_s is not None else None
    while pending:
        if stop is not None and stop(records, list(live.values()), time.perf_counter_ns()) == "cancel":
            break
        if deadline is not None and time.perf_counter_ns() >= deadline:
            break
        _, pending = await asyncio.wait(pending, timeout=0.05 if stop is not None or deadline else None)
    cut = list(live.values())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cancelled = [r for r in cut if r.status == CANCELLED]
    records.extend(cancelled)
    return cancelled


def run_load(base_url: str, model: str, items: list[WorkItem], arrivals: Arrivals, *,
             warmup: Optional[list[WorkItem]] = None, max_concurrency: Optional[int] = None,
             timeout_s: float = 120.0, duration_s: Optional[float] = None, on_record: Optional[ProgressFn] = None,
             extra: Optional[dict[str, Any]] = None, stop: Optional[StopFn] = None,
             drain_s: Optional[float] = None, t0_ns: Optional[int] = None) -> list[RequestRecord]:
    """Send `items` on the arrival process; returns every record (warmup ones marked), in completion order.
    Open loop only: `stop` ends the window early (checked before each send and while draining), `drain_s` caps the
    wait for requests still in flight once sending is over; what is cut off is kept as status cancelled.
    `t0_ns` (perf_counter_ns, the host's CLOCK_MONOTONIC) fixes the window's start: several processes sharing one
    schedule pass the same one."""
    arrivals.check()
    if max_concurrency is not None and max_concurrency < 1:
        raise ArrivalError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if (stop is not None or drain_s is not None) and arrivals.kind == "concurrency":
        raise ArrivalError("stop and drain_s apply to open-loop arrivals (poisson, gamma, constant, trace)")
    return run_coro(lambda: _run(base_url, model, items, arrivals, warmup=list(warmup or []),
                                 max_concurrency=max_concurrency, timeout_s=timeout_s, duration_s=duration_s,
                                 on_record=on_record, extra=extra, stop=stop, drain_s=drain_s, t0_ns=t0_ns))
