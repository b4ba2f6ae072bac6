"""Simulated: an OpenAI-compatible streaming server with a known latency model, for debugging and calibration.

Opt-in only: it starts when CTXKIT_ALLOW_SIMULATED_BACKEND=1, and every artifact of a run that used it says so
(backend mode "simulated"). Its /version answers "simulated-<ctxkit version>", so nothing mistakes it for vLLM.

Latency model, per request, on an absolute schedule from the request's arrival (no drift from relative sleeps):
first token at ttft_ms + prefill_ms_per_token x prompt tokens, then one token every tpot_ms.
With a capacity (`queue_servers` > 0): before its first token each request also waits, first come first served,
for one of `queue_servers` prefill slots and holds it for an exponential service time of mean `service_ms`, drawn
from the seed and the request's own prompt (its length and first 64 tokens): a request's service time does not
depend on which requests came before it, so a probe sees the same queue however many requests earlier probes sent.
Prompts that share their length and first 64 tokens (a long shared prefix) share a service time.
With one slot and ttft_ms 0 that is an M/M/1 queue under Poisson arrivals: time to first token is exponential with
rate mu - lambda, so the highest rate with a share q of TTFTs within s is lambda* = mu + ln(1 - q) / s, a capacity
known in closed form (tests of the goodput search use it).
Without a queue it can answer from several processes on one port (`processes`, SO_REUSEPORT: the kernel spreads
connections over them), so that a load test of several client processes measures the clients, not one server
process's event loop; each process counts only what it answered in /metrics. (With SO_REUSEPORT a second such server
given the same port would share it silently: ports come from free_port, which hands out a port nothing listens on.)
Run as its own process: python -m ctxkit.backends.simulated --port P [--ttft-ms ..] [--tpot-ms ..] [--processes N]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ctxkit import __version__
from ctxkit.backends.base import BackendUnavailable, ServerDied
from ctxkit.backends.process import ManagedServer, die_with_parent, group_members

SIMULATION_ENV = "CTXKIT_ALLOW_SIMULATED_BACKEND"


def simulation_allowed() -> bool:
    return os.environ.get(SIMULATION_ENV) == "1"


def require_simulation_allowed() -> None:
    if not simulation_allowed():
        raise BackendUnavailable(
            f"the simulated backend is disabled: ctxkit measures real vLLM by default. "
            f"Set {SIMULATION_ENV}=1 to allow it for debugging or calibration (every artifact will say so).")


class Simulated(ManagedServer):
    mode = "simulated"
    kind = "simulated server"

    def __init__(self, *, name: str = "simulated", model: str = "simulated", ttft_ms: float = 50.0,
                 tpot_ms: float = 10.0, prefill_ms_per_token: float = 0.0, max_model_len: int = 4096,
                 vocab_size: int = 4096, log_dir: Optional[Path] = None, host: str = "127.0.0.1",
                 port: Optional[int] = None, truth_log: Optional[Path] = None, queue_servers: int = 0,
                 service_ms: float = 0.0, seed: int = 0, processes: int = 1) -> None:
        require_simulation_allowed()
        if processes < 1 or (processes > 1 and queue_servers):
            raise ValueError("processes must be >= 1, and 1 with a queue (queue_servers): one queue needs one process")
        super().__init__(name=name, host=host, port=port, log_dir=log_dir, startup_timeout_s=60.0)
        self.model = model
        self.ttft_ms, self.tpot_ms, self.prefill_ms_per_token = ttft_ms, tpot_ms, prefill_ms_per_token
        self.max_model_len, self.vocab_size = max_model_len, vocab_size
        self.truth_log = truth_log
        self.queue_servers, self.service_ms, self.seed = queue_servers, service_ms, seed
        self.processes = processes

    def preflight(self) -> None:
        require_simulation_allowed()

    def command(self) -> list[str]:
        return [self.python, "-m", "ctxkit.backends.simulated", "--host", self.host, "--port", str(self.port),
                "--model", self.model, "--ttft-ms", str(self.ttft_ms), "--tpot-ms", str(self.tpot_ms),
                "--prefill-ms-per-token", str(self.prefill_ms_per_token),
                "--max-model-len", str(self.max_model_len), "--vocab-size", str(self.vocab_size)] + \
            (["--truth-log", str(self.truth_log)] if self.truth_log else []) + \
            (["--queue-servers", str(self.queue_servers), "--service-ms", str(self.service_ms), "--seed",
              str(self.seed)] if self.queue_servers else []) + \
            (["--processes", str(self.processes)] if self.processes > 1 else [])

    def after_start(self) -> None:
        """With several processes, /health answered by one says nothing of the others: wait until each of them
        listens on the port (or one has died), so that a run never measures fewer server processes than it says."""
        super().after_start()
        deadline = time.monotonic() + 30.0
        while (listening := self.listening()) < self.processes:
            if len(group_members(self.proc.pid)) < self.processes or time.monotonic() > deadline:
                self.stop()
                raise ServerDied(f"{self.kind} {self.name!r}: {listening} of {self.processes} processes listen on "
                                 f"port {self.port}")
            time.sleep(0.05)

    def listening(self) -> int:
        """How many processes of the server's group listen on its port."""
        count = 0
        for proc in group_members(self.proc.pid):
            try:
                conns = getattr(proc, "net_connections", proc.connections)("tcp")     # psutil >= 6 / older
                count += any(c.status == "LISTEN" and c.laddr.port == self.port for c in conns)
            except Exception:  # noqa: BLE001 - a process gone since the listing listens on nothing
                continue
        return count

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "latency_model": {
            "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "prefill_ms_per_token": self.prefill_ms_per_token,
            "queue_servers": self.queue_servers, "service_ms": self.service_ms}, "processes": self.processes}


# ------------------------------------------------------------------------------------------------------------
# The server process
# ------------------------------------------------------------------------------------------------------------
def service_s(seed: int, prompt: list[int], service_ms: float) -> float:
    """A request's prefill service time: exponential with mean service_ms, drawn from the seed and the prompt's
    length and first 64 tokens (benchmarks/virtual_queue.py draws the same). A hash of a tuple of ints is the same in
    every process (only str and bytes hashes are salted)."""
    return random.Random(hash((seed, len(prompt), *prompt[:64]))).expovariate(1000.0 / service_ms)


class _FifoSlots:
    """K servers, first come first served. A waiter that is cancelled leaves the queue; one cancelled while its
    slot was being handed over passes the slot on (asyncio.Semaphore gave out extra slots after mass cancellation
    here, which turned one server into several). `acquire` returns when service starts: the moment the slot was
    released to it, not the moment its task woke up (a busy event loop wakes it late; counting that lateness as
    service would slow every server down and move the queue's capacity below its closed form)."""

    def __init__(self, k: int) -> None:
        self.free, self.waiters = k, collections.deque()

    async def acquire(self) -> float:
        arrived = time.monotonic()
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return arrived
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return max(arrived, await fut)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()           # granted just as it was cancelled: hand the slot on
            else:
                self.waiters.remove(fut)
            raise

    def release(self, at: Optional[float] = None) -> None:
        """Free a slot that became free `at` (default now): the holder's service end, though it woke later."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(time.monotonic() if at is None else at)   # straight to the next waiter
                return
        self.free += 1


async def _sleep_until(due: float) -> None:
    """Sleep until `due` on the monotonic clock, to within ~0.1 ms: event-loop timers wake up to ~1 ms late, which
    would add several percent to a 20 ms service time and move the queue's capacity."""
    while (left := due - time.monotonic()) > 0.002:
        await asyncio.sleep(left - 0.002)
    while time.monotonic() < due:
        await asyncio.sleep(0)


def chunk(head: str, token: int, finish: Optional[str], prompt_ids: str = "") -> bytes:
    """One streamed token as vLLM sends it. Formatted by hand (not json.dumps): at 64 streams x 100 tokens/s the
    simulator must stay far from busy, or its own lateness would be mistaken for the client's."""
    fin = "null" if finish is None else f'"{finish}"'
    return (f'data: {head}"choices":[{{"index":0,"text":" t{token}","token_ids":[{token}],{prompt_ids}'
            f'"finish_reason":{fin}}}]}}\n\n').encode()


def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    counters = {"requests": 0, "prompt_tokens": 0, "generation_tokens": 0}

    model_json = json.dumps(args.model)
    # Ground truth for calibration: when each request's handler started and its first and last token left, on the
    # machine's monotonic clock (the same clock as the client's perf_counter_ns on Linux).
    truth = open(args.truth_log, "a", buffering=1) if args.truth_log else None
    slots = _FifoSlots(args.queue_servers) if args.queue_servers else None

    async def completions(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        t0_ns = time.monotonic_ns()   # precise (a uvloop loop's time() is cached per iteration, in ms)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        prompt = body.get("prompt")
        if isinstance(prompt, str):  # text prompts (e.g. vLLM's own benchmark client): one token per word
            prompt = [len(w) for w in prompt.split()] or [0]
        if not isinstance(prompt, list) or not all(isinstance(t, int) for t in prompt):
            return web.json_response({"error": {"message": "prompt must be text or a list of token ids"}},
                                     status=400)
        max_tokens = int(body.get("max_tokens") or 16)
        if len(prompt) + max_tokens > args.max_model_len:
            return web.json_response({"error": {"message": (
                f"This model's maximum context length is {args.max_model_len} tokens. However, you requested "
                f"{len(prompt) + max_tokens} tokens.")}}, status=400)
        counters["requests"] += 1
        counters["prompt_tokens"] += len(prompt)
        # As vLLM does with return_token_ids: the first chunk also carries the prompt's ids (one long line). Made
        # here, before the first token's due time: a 120K-id dump takes milliseconds.
        prompt_ids = f'"prompt_token_ids":{json.dumps(prompt)},' if body.get("return_token_ids") else ""
        rng = random.Random(body.get("seed", 0) if body.get("temperature", 0) else 31 * len(prompt) + sum(prompt[-8:]))
        req_id = request.headers.get("X-Request-Id", f"cmpl-{os.getpid()}-{counters['requests']}" if
                                     args.processes > 1 else f"cmpl-{counters['requests']}")
        head = (f'{{"id":{json.dumps(req_id)},"object":"text_completion","created":{int(time.time())},'
                f'"model":{model_json},')
        # The handler's start on the machine's monotonic clock (the client's perf_counter_ns is the same clock on
        # Linux): lets a calibration split client-side from server-side delay.
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Sim-Handler-Start-Ns": str(t0_ns),
                                           "X-Sim-Pid": str(os.getpid())})
        await resp.prepare(request)
        first = t0 + (args.ttft_ms + args.prefill_ms_per_token * len(prompt)) / 1000.0
        if slots is not None:     # wait for a prefill slot, hold it for an exponential service time
            service = service_s(args.seed, prompt, args.service_ms)
            start = await slots.acquire()
            done_at: Optional[float] = None
            try:
                await _sleep_until(start + service)
                done_at = start + service
            finally:
                slots.release(done_at)     # cancelled mid-service: free from now
            first = max(first, loop.time())
        sent: list[int] = []
        for k in range(max_tokens):
            due = first + k * args.tpot_ms / 1000.0
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            finish = "length" if k == max_tokens - 1 else None
            if truth is not None and (k == 0 or k == max_tokens - 1):
                sent.append(time.monotonic_ns())    # as the chunk is handed to the transport
            await resp.write(chunk(head, rng.randrange(args.vocab_size), finish, prompt_ids if k == 0 else ""))
            counters["generation_tokens"] += 1
        if truth is not None:
            truth.write(json.dumps({"request_id": req_id, "t_handler_ns": t0_ns, "t_first_sent_ns": sent[0],
                                    "t_last_sent_ns": sent[-1], "n_out": max_tokens}) + "\n")
        usage = {"prompt_tokens": len(prompt), "completion_tokens": max_tokens,
                 "total_tokens": len(prompt) + max_tokens}
        await resp.write(b"data: " + json.dumps({"id": req_id, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": f"simulated-{__version__}"})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": args.model, "object": "model"}]})

    async def metrics(_: web.Request) -> web.Response:
        lines = [f"# TYPE sim:{k} counter\nsim:{k}_total {v}" for k, v in counters.items()]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.post("/v1/completions", completions), web.get("/health", health),
                    web.get("/version", version), web.get("/v1/models", models), web.get("/metrics", metrics)])
    # A client that goes away cancels its handler (and frees its prefill slot), as vLLM aborts such requests.
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=lambda *_: None,
                handler_cancellation=True, reuse_port=args.processes > 1)


def _fork_siblings(n: int) -> bool:
    """Fork n more server processes before any event loop exists; each dies with this one (the process the
    managing ctxkit started and stops, with its whole process group). True in a sibling."""
    leader = os.getpid()
    for _ in range(n):
        if os.fork() == 0:
            die_with_parent()
            if os.getppid() != leader:       # the leader died before the death signal was set
                os._exit(1)
            return True
    return False


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="ctxkit's simulated OpenAI-compatible server (opt-in)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="simulated")
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--tpot-ms", type=float, default=10.0)
    ap.add_argument("--prefill-ms-per-token", type=float, default=0.0)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--truth-log", help="append each request's server-side token times (JSONL) here")
    ap.add_argument("--queue-servers", type=int, default=0, help="prefill slots (0: no queue, unlimited capacity)")
    ap.add_argument("--service-ms", type=float, default=0.0, help="mean exponential prefill service time per slot")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1, help="server processes on the port (no queue only)")
    args = ap.parse_args(argv)
    if not simulation_allowed():
        sys.exit(f"refusing to start: {SIMULATION_ENV}=1 is not set")
    if args.processes < 1 or (args.processes > 1 and args.queue_servers):
        sys.exit("--processes must be >= 1, and 1 with --queue-servers (one queue needs one process)")
    sibling = _fork_siblings(args.processes - 1)
    if args.processes > 1 and not sibling:      # a sibling that dies early is reaped, not left a zombie
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        import uvloop  # a faster event loop where installed (vLLM brings it)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    _serve(args)
    if sibling:             # never back into a caller that imported main(): the leader's code path is its own
        os._exit(0)


if __name__ == "__main__":
    main()
