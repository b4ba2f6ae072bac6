"""The client's reading of a stream: lines however the bytes are cut, and chunks without the prompt's ids."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxkit import sse
from ctxkit.completions import without_prompt_ids


class Pieces:
    """What aiohttp's StreamReader.iter_any gives: the bytes in whatever pieces the network delivered."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self):
        for piece in self.pieces:
            yield piece


async def read(pieces: list[bytes]) -> list[bytes]:
    return [line async for line in sse.lines(Pieces(pieces))]   # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8), st.booleans(),
       st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_lines_come_back_whole_however_the_stream_is_cut(lines, trailing_newline, cuts):
    text = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    at = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(at, at[1:]) if b > a]
    *whole, last = text.split(b"\n")
    assert asyncio.run(read(pieces)) == [line + b"\n" for line in whole] + ([last] if last else [])


@pytest.mark.parametrize("chunk", [
    {"id": "c", "choices": [{"text": "a", "token_ids": [5], "prompt_token_ids": [1, 2, 3]}]},
    {"id": "c", "choices": [{"prompt_token_ids": [1, 2, 3], "text": "a", "token_ids": [5]}]},
    {"prompt_token_ids": [7], "id": "c", "choices": []},
    {"id": "c", "choices": [{"prompt_token_ids": [], "token_ids": [4, 2]}]},
    {"id": "c", "choices": [{"text": "a", "token_ids": [5]}]},
])
def test_a_chunk_reads_the_same_without_the_prompts_ids(chunk):
    data = json.dumps(chunk, separators=(",", ":")).encode()
    stripped = json.loads(without_prompt_ids(data))
    expected = json.loads(data)
    for obj in (expected, *expected.get("choices", [])):
        obj.pop("prompt_token_ids", None)
    assert stripped == expected
    spaced = json.dumps(chunk).encode()                 # spelled with spaces: left whole, still valid
    assert json.loads(without_prompt_ids(spaced)) == chunk
