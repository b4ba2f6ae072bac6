"""The lines of a server-sent event stream, however long a line is.

aiohttp's own line reader (`async for line in resp.content`) gives up at a fixed size (512 KiB with aiohttp 3.14,
LineTooLong). vLLM's first chunk carries the prompt's token ids when `return_token_ids` is set, and a 65,472-token
prompt took it past that on an H200 (2026-11-28): the client and the router read lines with this instead.
"""
from __future__ import annotations

from typing import AsyncIterator

import aiohttp


async def lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Each line of the stream with its newline (the last one without, if the stream does not end in one), as soon
    as its newline has arrived."""
    parts: list[bytes] = []            # a long line's pieces, joined once its newline arrives (not copied per piece)
    async for data in content.iter_any():
        if b"\n" not in data:
            parts.append(data)
            continue
        *whole, rest = (b"".join(parts) + data if parts else data).split(b"\n")
        parts = [rest] if rest else []
        for line in whole:
            yield line + b"\n"
    if parts:
        yield b"".join(parts)
