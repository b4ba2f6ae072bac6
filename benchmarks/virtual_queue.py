"""The goodput search's probes on a virtual clock: the simulated server's M/M/K queue without the server or the wait.

ctxkit's search (`ctxkit.load.search`: its stop rule, scoring, steady-state checks, next rate and bracket) runs
unchanged; only `run_load`, the client that sends a probe's Poisson stream and collects its records, is replaced
by a model that computes each request's times instead of waiting for them. The model is the simulated server's own
queue (ctxkit/backends/simulated.py with queue_servers and service_ms): K prefill slots first come first served,
each request holding one for an exponential service time drawn from the same seed and prompt as the server draws
it, then one token every tpot_ms. The Poisson send times are the client's own (`Arrivals.offsets_s`), so a probe
sees the same stream and the same service times as on the live server; what the model leaves out is the live run's
own noise: the client's send lag, the server's event loop, the time between probes.

The stop rule is asked what the live client asks it, when: before each send, with the finished records (in
completion order) and those in flight as they stand at that instant, and while draining, every 50 ms (or once
everything is done). A probe's cost is its virtual seconds from the first send to its last completion or its cut-off.
"""
from __future__ import annotations

import contextlib
import heapq
from typing import Iterator, Optional

from ctxkit.backends import ServingBackend
from ctxkit.backends.simulated import service_s
from ctxkit.load import search as search_module
from ctxkit.load.arrivals import Arrivals
from ctxkit.load.workloads import LengthDist, WorkItem, synthetic
from ctxkit.records import CANCELLED, RequestRecord

POLL_NS = 50_000_000            # the live client's drain loop wakes after 50 ms, or once every request is done


class _Clock:
    """The `time` the search module reads, on the queue's clock (settle's sleep has nothing to wait for)."""

    def __init__(self, queue: "VirtualQueue") -> None:
        self.queue = queue

    def monotonic(self) -> float:
        return self.queue.clock_ns / 1e9

    def sleep(self, seconds: float) -> None:
        self.queue.clock_ns += int(seconds * 1e9)


class VirtualQueue(ServingBackend):
    """A stand-in backend and client: `with queue.patched(): search(queue, ...)` runs the search on virtual time.
    `elapsed_s` adds up every probe's virtual seconds; `probe_s` lists them."""

    base_url = "virtual://queue"
    model = "virtual"

    def __init__(self, servers: int, service_ms: float, seed: int, tpot_ms: float = 1.0) -> None:
        self.servers, self.service_ms, self.seed, self.tpot_ms = servers, service_ms, seed, tpot_ms
        self.clock_ns = 10**12          # probes follow one another on one clock, each starting on an empty queue
        self.probe_s: list[float] = []

    @property
    def elapsed_s(self) -> float:
        return sum(self.probe_s)

    def metric_sources(self) -> dict:
        return {}

    @contextlib.contextmanager
    def patched(self) -> Iterator["VirtualQueue"]:
        """ctxkit.load.search with this queue's client and clock: its probes' wall_s and the search's wall-time cap
        read virtual seconds."""
        saved = search_module.run_load, search_module.time
        search_module.run_load, search_module.time = self.run_load, _Clock(self)
        try:
            yield self
        finally:
            search_module.run_load, search_module.time = saved

    def _service_ns(self, prompt: list[int]) -> int:
        return int(service_s(self.seed, prompt, self.service_ms) * 1e9)       # the simulated server's own draw

    def _schedule(self, items: list[WorkItem], sends: list[int]) -> list[tuple[int, int]]:
        """Each request's first-token and end time if every one were sent (first come first served: a request's
        times do not depend on those sent after it, so a probe cut short changes none of them)."""
        free = [sends[0]] * self.servers
        out = []
        for it, sent in zip(items, sends):
            start = max(heapq.heappop(free), sent)
            first = start + self._service_ns(it.prompt)
            heapq.heappush(free, first)
            out.append((first, first + int((it.max_tokens - 1) * self.tpot_ms * 1e6)))
        return out

    def run_load(self, base_url: str, model: str, items: list[WorkItem], arrivals: Arrivals, *,
                 timeout_s: float, stop=None, drain_s: Optional[float] = None) -> list[RequestRecord]:
        """run_load's open-loop path (ctxkit.load.arrivals): the arguments the search passes, no others. The
        requests' own timeout_s is not modelled: a probe's stop rule cuts its backlog off long before."""
        if not items:
            return []
        t0 = self.clock_ns
        sends = [t0 + int(off * 1e9) for off in arrivals.offsets_s(items)]
        times = self._schedule(items, sends)
        records: list[RequestRecord] = []
        flight: list[tuple[int, int]] = []          # (end, index) of the requests in flight

        def finish_until(now: int) -> None:
            while flight and flight[0][0] <= now:
                _, i = heapq.heappop(flight)
                records.append(self._record(items[i], sends[i], *times[i]))

        queued: dict[int, RequestRecord] = {}      # in flight without a token yet: the record does not change

        def live(now: int) -> list[RequestRecord]:
            out = []
            for _, i in flight:
                if times[i][0] > now:
                    if i not in queued:
                        queued[i] = self._record(items[i], sends[i], *times[i], now=now)
                    out.append(queued[i])
                else:
                    out.append(self._record(items[i], sends[i], *times[i], now=now))
            return out

        now = t0
        for i, sent in enumerate(sends):
            now = sent
            finish_until(now)
            if stop is not None and stop(records, live(now), now):
                break
            heapq.heappush(flight, (times[i][1], i))
        deadline = now + int(drain_s * 1e9) if drain_s is not None else None
        while True:
            finish_until(now)
            if not flight:
                break
            if stop is not None and stop(records, live(now), now) == "cancel" or \
                    deadline is not None and now >= deadline:
                cut = live(now)
                for rec in cut:
                    rec.status, rec.t_end_ns = CANCELLED, now
                records.extend(cut)
                break
            last = max(end for end, _ in flight)       # asyncio.wait(pending, timeout): all done, or the timeout
            now = min(last, now + POLL_NS) if stop is not None or deadline is not None else last
            if deadline is not None:
                now = min(now, deadline)
        end = max([now] + [r.t_end_ns or 0 for r in records])
        self.probe_s.append((end - t0) / 1e9)
        self.clock_ns = end
        return records

    def _record(self, it: WorkItem, sent: int, first: int, end: int, now: Optional[int] = None) -> RequestRecord:
        """The request's record as the client holds it at `now` (finished when now is None)."""
        rec = RequestRecord(it.request_id, len(it.prompt), it.max_tokens, t_sched_ns=sent, t_send_ns=sent,
                            tags=dict(it.tags))
        if now is not None and first > now:
            return rec                            # in flight, no token yet
        step = int(self.tpot_ms * 1e6)
        chunks = [first + k * step for k in range(it.max_tokens) if now is None or first + k * step <= now]
        rec.t_first_ns, rec.t_last_ns = first, chunks[-1]
        rec.chunk_times_ns, rec.chunk_tokens = chunks, [1] * len(chunks)
        rec.n_out = len(chunks)
        if now is None:
            rec.t_end_ns = end
        return rec


def items(seed: int):
    """The reference queue's workload (16-token prompts, 2 tokens out), fresh for every probe and batch: shared by
    the search's tests and its benchmarks, whose recorded figures rest on these seeds."""
    def make(probe: int, batch: int, n: int) -> list[WorkItem]:
        return synthetic(n, LengthDist("fixed", 16), LengthDist("fixed", 2), vocab_size=4096,
                         seed=seed * 100_000 + probe * 10 + batch, id_prefix=f"s{seed}p{probe}b{batch}")
    return make
