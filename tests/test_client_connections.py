"""The load client against a server that drops connections: a connection closed before the server answered (what a
kept-alive connection meets when the server times it out as the request goes out) is tried once more on a fresh
connection and counted; a server that keeps dropping them, or one that is not there, is a failure that says why.
A raw asyncio server stands in for vLLM so that which connection is dropped is exact."""
from __future__ import annotations

import asyncio
import json

from ctxkit.completions import CompletionRequest, new_session, stream_request
from ctxkit.records import DISCONNECT

STREAM = b"".join(b"data: " + json.dumps(obj).encode() + b"\n\n" for obj in (
    {"choices": [{"text": "a", "token_ids": [11]}]},
    {"choices": [{"text": "b", "token_ids": [12]}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})) + b"data: [DONE]\n\n"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)


def serve(drop_first: int):
    """A server that closes the first `drop_first` connections as soon as a request's headers arrive, and answers
    the others with a two-token stream. Returns (server factory, connections seen)."""
    seen = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(len(seen))
        if len(seen) <= drop_first:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + STREAM)
        await writer.drain()
        writer.close()

    return (lambda: asyncio.start_server(handle, "127.0.0.1", 0)), seen


async def _one(url: str):
    async with new_session() as session:
        return await stream_request(session, url, "m", CompletionRequest("r1", [1, 2, 3], 2), timeout_s=10)


def _run(drop_first: int):
    start, seen = serve(drop_first)

    async def main():
        server = await start()
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await _one(f"http://127.0.0.1:{port}")
    return asyncio.run(main()), seen


def test_a_connection_dropped_before_the_answer_is_tried_once_more_and_counted():
    rec, seen = _run(drop_first=1)
    assert rec.ok, rec.error
    assert rec.output_token_ids == [11, 12] and rec.n_out == 2
    assert rec.tags["send_retries"] == 1 and len(seen) == 2


def test_a_server_that_keeps_dropping_connections_is_a_failure_that_says_so():
    rec, seen = _run(drop_first=2)
    assert rec.status == DISCONNECT and rec.tags["send_retries"] == 1 and len(seen) == 2   # once more, no more
    assert "disconnect" in rec.error.lower() or "can not write" in rec.error.lower(), rec.error


def test_no_server_at_all_is_not_retried():
    async def main():
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        return await _one(f"http://127.0.0.1:{port}")
    rec = asyncio.run(main())
    assert rec.status == DISCONNECT and "send_retries" not in rec.tags
    assert "Cannot connect" in rec.error, rec.error


def test_an_answered_request_is_sent_once():
    rec, seen = _run(drop_first=0)
    assert rec.ok and "send_retries" not in rec.tags and len(seen) == 1

