"""Async streaming client for OpenAI-compatible completions (vLLM's /v1/completions).

Prompts are token-id lists, so input lengths are exact. Each request asks for `stream_options.include_usage` and
`return_token_ids` (vLLM >= 0.10), so every chunk says how many tokens it carries and which. Times are
`time.perf_counter_ns()` taken when a chunk's line arrives, before it is parsed.

It sits at the bottom of the layers beside ctxkit.records (which is all it imports): backends use it for their
`generate`, the load runner (ctxkit.load) for traffic.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, TypeVar

import aiohttp

from ctxkit import sse
from ctxkit.records import CANCELLED, DISCONNECT, HTTP_ERROR, OK, PROTOCOL_ERROR, TIMEOUT, TRUNCATED, RequestRecord

T = TypeVar("T")


@dataclass
class CompletionRequest:
    request_id: str
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    seed: Optional[int] = None
    ignore_eos: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # more body fields, e.g. kv_transfer_params
    t_sched_ns: int = 0
    warmup: bool = False


def completion_payload(model: str, req: CompletionRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "ignore_eos": req.ignore_eos,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    if req.seed is not None:
        body["seed"] = req.seed
    body.update(req.extra)
    return body


def _new_record(req: CompletionRequest) -> RequestRecord:
    return RequestRecord(request_id=req.request_id, prompt_tokens=len(req.prompt), max_tokens=req.max_tokens,
                         t_sched_ns=req.t_sched_ns, warmup=req.warmup)


def _consume_chunk(rec: RequestRecord, obj: dict[str, Any], now_ns: int) -> None:
    usage = obj.get("usage")
    if usage:
        rec.n_out = int(usage.get("completion_tokens") or 0)
        rec.usage_prompt_tokens = usage.get("prompt_tokens")
    for choice in obj.get("choices") or []:
        ids = choice.get("token_ids")
        text = choice.get("text") or ""
        n = len(ids) if ids is not None else (1 if text else 0)
        if ids:
            rec.output_token_ids.extend(int(i) for i in ids)
        rec.output_text += text
        if n > 0:
            if rec.t_first_ns is None:
                rec.t_first_ns = now_ns
            rec.t_last_ns = now_ns
            rec.chunk_times_ns.append(now_ns)
            rec.chunk_tokens.append(n)


class _StaleConnection(Exception):
    """A kept-alive connection the client reused was lost before the server answered: the server had closed it
    (idle) as the request went out on it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _mark_reused(session: aiohttp.ClientSession, ctx: Any, params: Any) -> None:
    """aiohttp trace hook: this request went out on a pooled connection (see _exchange)."""
    if isinstance(ctx.trace_request_ctx, dict):
        ctx.trace_request_ctx["reused"] = True


async def _exchange(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                    rec: RequestRecord) -> bool:
    """One POST and its stream into `rec`; True when [DONE] arrived. A connection lost before any response byte
    raises _StaleConnection when it was a reused one (new_session's sessions say so), the aiohttp error otherwise."""
    marks: dict[str, bool] = {}
    try:
        resp = await session.post(url, data=body, headers=headers, trace_request_ctx=marks)
    except aiohttp.ClientConnectorError:
        raise                              # no connection at all (refused): nothing was stale
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        if marks.get("reused"):
            raise _StaleConnection(exc) from exc
        raise
    async with resp:
        rec.http_status = resp.status
        rec.route = resp.headers.get("X-Ctxkit-Route")
        if "X-Sim-Handler-Start-Ns" in resp.headers:
            rec.tags["server_start_ns"] = int(resp.headers["X-Sim-Handler-Start-Ns"])
        if resp.status != 200:
            rec.status = HTTP_ERROR
            rec.error = f"HTTP {resp.status}: {(await resp.text())[:500]}"
            return True
        async for raw in sse.lines(resp.content):
            now = time.perf_counter_ns()
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return True
            obj = json.loads(without_prompt_ids(data))
            if not isinstance(obj, dict):
                raise ValueError("chunk is not a JSON object")
            if "error" in obj:
                rec.status = HTTP_ERROR
                rec.error = f"error in stream: {json.dumps(obj['error'])[:500]}"
                return True
            _consume_chunk(rec, obj, now)
    return False


async def _send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                rec: RequestRecord) -> bool:
    """_exchange, once more on a new connection when the first attempt went out on a kept-alive connection that was
    lost before any answer: a server closes an idle connection (uvicorn after 5 s), and a request reusing it at that
    moment fails (aiohttp "Can not write request body", or "Server disconnected"), a race of the connection pool.
    A failure on a new connection is not retried: that server may have read the request. The retry is counted in the
    record's tags (send_retries, first_attempt_error); its send time stays the first attempt's, so the latency
    includes the lost attempt."""
    try:
        return await _exchange(session, url, body, headers, rec)
    except _StaleConnection as stale:
        first = stale.cause
    rec.tags["send_retries"] = 1
    rec.tags["first_attempt_error"] = f"{type(first).__name__}: {first}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=None)) as fresh:
        return await _exchange(fresh, url, body, headers, rec)     # a new connection: its failure is the server's


PROMPT_IDS = b'"prompt_token_ids":['


def without_prompt_ids(data: bytes) -> bytes:
    """A chunk's JSON without the prompt's token ids that the first chunk carries (return_token_ids). Nothing reads
    them, and at 131,072 tokens decoding them (a megabyte, as many ints) blocks the client's loop for about 10 ms,
    holding back the sends due meanwhile. A chunk spelled otherwise (spaces after the colon) is left whole."""
    start = data.find(PROMPT_IDS)
    if start < 0:
        return data
    end = data.find(b"]", start + len(PROMPT_IDS)) + 1
    if end == 0:
        return data
    if data[end:end + 1] == b",":
        end += 1
    elif data[start - 1:start] == b",":
        start -= 1
    return data[:start] + data[end:]


def encode(model: str, req: CompletionRequest) -> bytes:
    """The request's JSON body. A 131,072-token prompt takes about 10 ms to encode: a client on a schedule encodes
    it before the request is due (load.arrivals), so that the encoding is not send lag."""
    return json.dumps(completion_payload(model, req), separators=(",", ":")).encode()


async def stream_request(session: aiohttp.ClientSession, base_url: str, model: str, req: CompletionRequest,
                         timeout_s: float = 120.0,
                         started: Optional[Callable[[RequestRecord], None]] = None,
                         body: Optional[bytes] = None) -> RequestRecord:
    """Send one streaming completion; never raises for request-level failures (they go into the record).
    `started(record)` sees the live record as the request goes out (its chunk times fill in as they arrive); a
    cancelled request's record says so (status cancelled) before the cancellation goes on. `body`: the request
    already encoded (encode)."""
    rec = _new_record(req)
    url = f"{base_url.rstrip('/')}/v1/completions"
    # Serialized before t_send, so the clock starts when the request is handed to the connection.
    body = body if body is not None else encode(model, req)
    headers = {"Content-Type": "application/json", "X-Request-Id": req.request_id}
    rec.t_send_ns = time.perf_counter_ns()
    if started is not None:
        started(rec)
    try:
        async with asyncio.timeout(timeout_s):
            done = await _send(session, url, body, headers, rec)
        if not done:
            rec.status = TRUNCATED
            rec.error = "stream ended before [DONE]"
    except TimeoutError:
        rec.status = TIMEOUT
        rec.error = f"no complete answer within {timeout_s:g} s"
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
        rec.status = DISCONNECT
        # aiohttp wraps the OS-level error: keep what it was
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        rec.error = f"{type(exc).__name__}: {exc}" + (f" (from {type(cause).__name__}: {cause})" if cause else "")
    except ValueError as exc:  # JSON decoding or an unexpected shape
        rec.status = PROTOCOL_ERROR
        rec.error = f"not an OpenAI completions stream: {exc}"
    except asyncio.CancelledError:
        rec.status = CANCELLED
        rec.error = "cancelled by the client before the answer ended"
        rec.t_end_ns = time.perf_counter_ns()
        raise
    finally:
        rec.t_end_ns = time.perf_counter_ns()
    if rec.status == OK and rec.n_out == 0:
        rec.n_out = sum(rec.chunk_tokens)
    return rec


KEEPALIVE_S = 4.0   # idle connections dropped before vLLM's server (uvicorn) drops them, after 5 s


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """One session per run: keep-alive connections (idle ones closed after KEEPALIVE_S), no connection cap (the
    arrival process caps concurrency); it marks requests sent on a reused connection (see _send)."""
    reuse = aiohttp.TraceConfig()
    reuse.on_connection_reuseconn.append(_mark_reused)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=KEEPALIVE_S),
                                 timeout=aiohttp.ClientTimeout(total=None), trace_configs=[reuse])


def run_coro(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also inside Jupyter (whose loop is already running):
    then it runs on a fresh loop in a helper thread. KeyboardInterrupt still reaches the caller's thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="ctxkit-client", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in result:
        raise result["error"]
    return result["value"]


def stream_one(base_url: str, model: str, req: CompletionRequest, timeout_s: float = 120.0) -> RequestRecord:
    async def go() -> RequestRecord:
        async with new_session() as session:
            return await stream_request(session, base_url, model, req, timeout_s)
    return run_coro(go)
