"""The load client against a server that drops connections. A kept-alive connection the client reuses, lost before
the server answered (what happens when the server times it out as the request goes out on it), is tried once more
on a new connection and counted; a new connection lost, a server that is not there, are failures that say why and
are not retried (such a server may have read the request). A raw asyncio server stands in for vLLM so that which
connection is dropped, and when, is exact."""
from __future__ import annotations

import asyncio
import json

from ctxkit.completions import CompletionRequest, new_session, stream_request
from ctxkit.records import DISCONNECT

STREAM = b"".join(b"data: " + json.dumps(obj).encode() + b"\n\n" for obj in (
    {"choices": [{"text": "a", "token_ids": [11]}]},
    {"choices": [{"text": "b", "token_ids": [12]}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})) + b"data: [DONE]\n\n"
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + str(len(STREAM)).encode()
          + b"\r\n\r\n" + STREAM)            # keep-alive: the connection stays open for the next request


async def read_request(reader: asyncio.StreamReader) -> bool:
    """One whole request off the connection; False when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return True


class Server:
    """Answers every request, except that on the connections in `drop` it closes the connection when the request
    with that number (1-based, per connection) arrives, without answering."""

    def __init__(self, drop: dict[int, int]) -> None:
        self.drop, self.requests = drop, []          # requests: (connection, its request number)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, n = max([c for c, _ in self.requests], default=-1) + 1, 0
        while await read_request(reader):
            n += 1
            self.requests.append((conn, n))
            if self.drop.get(conn) == n:
                break
            writer.write(ANSWER)
            await writer.drain()
        writer.close()


def send(drop: dict[int, int], ids: list[str]):
    """The requests `ids` one after another on one client session; their records and what the server saw."""
    server = Server(drop)

    async def main():
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
        async with listening, new_session() as session:
            return [await stream_request(session, url, "m", CompletionRequest(i, [1, 2, 3], 2), timeout_s=10)
                    for i in ids]
    return asyncio.run(main()), server.requests


def test_a_reused_connection_lost_before_the_answer_is_tried_once_more_on_a_new_one():
    (first, second), seen = send({0: 2}, ["r1", "r2"])    # connection 0's second request: dropped unanswered
    assert first.ok and "send_retries" not in first.tags
    assert second.ok, second.error
    assert second.output_token_ids == [11, 12] and second.n_out == 2
    assert second.tags["send_retries"] == 1 and "disconnected" in second.tags["first_attempt_error"].lower()
    assert seen == [(0, 1), (0, 2), (1, 1)]              # sent again on a new connection, once


def test_a_new_connection_lost_before_the_answer_is_a_failure_and_not_sent_again():
    (rec,), seen = send({0: 1}, ["r1"])                  # this server may have read the request: no second copy
    assert rec.status == DISCONNECT and "send_retries" not in rec.tags and seen == [(0, 1)]
    assert rec.error.startswith("ServerDisconnectedError") and "_Stale" not in rec.error, rec.error


def test_a_retry_that_fails_too_is_a_failure_that_names_both_attempts():
    (first, second), seen = send({0: 2, 1: 1}, ["r1", "r2"])
    assert first.ok and second.status == DISCONNECT and seen == [(0, 1), (0, 2), (1, 1)]
    assert second.tags["send_retries"] == 1 and "disconnected" in second.tags["first_attempt_error"].lower()
    assert second.error.startswith("ServerDisconnectedError") and "_Stale" not in second.error, second.error


def test_no_server_at_all_is_not_retried():
    async def main():
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with new_session() as session:
            return await stream_request(session, f"http://127.0.0.1:{port}", "m", CompletionRequest("r", [1], 1))
    rec = asyncio.run(main())
    assert rec.status == DISCONNECT and "send_retries" not in rec.tags
    assert "Cannot connect" in rec.error and "(from " in rec.error, rec.error     # with the OS-level cause


def test_answered_requests_share_one_kept_alive_connection_and_are_sent_once():
    recs, seen = send({}, ["r1", "r2", "r3"])
    assert all(r.ok and "send_retries" not in r.tags for r in recs)
    assert seen == [(0, 1), (0, 2), (0, 3)]
