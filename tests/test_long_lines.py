"""A first chunk longer than aiohttp's line limit. vLLM sends the prompt's token ids in the first chunk when asked
for `return_token_ids` (ctxkit always asks); at 65,472 tokens on an H200 that line passed the 512 KiB aiohttp's
line reader allows and the run failed with LineTooLong. The simulator (opted in here) sends the same first chunk;
the client and the router must both read it."""
from __future__ import annotations

import asyncio

from ctxkit import sse
from ctxkit.backends import Simulated
from ctxkit.completions import CompletionRequest, stream_one
from ctxkit.records import OK
from ctxkit.schedulers.router import RouterProcess

PROMPT_LEN = 120_000      # ids of six digits and a comma: 840 KB of prompt ids in one line


def _request() -> CompletionRequest:
    return CompletionRequest("long-0", [100_000 + i % 900_000 for i in range(PROMPT_LEN)], max_tokens=4)


def test_client_and_router_read_a_first_chunk_past_the_line_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(ttft_ms=0, tpot_ms=1, max_model_len=PROMPT_LEN + 16, log_dir=tmp_path) as sim:
        direct = stream_one(sim.base_url, sim.model, _request())
        assert direct.status == OK, direct.error
        assert len(direct.output_token_ids) == 4 and direct.usage_prompt_tokens == PROMPT_LEN
        config = {"mode": "aggregated", "model": sim.model, "policy": "round_robin",
                  "instances": {"pool": [{"name": "sim", "url": sim.base_url}]},
                  "route_log": str(tmp_path / "routes.jsonl"), "handoff_log": None}
        with RouterProcess(config, log_dir=tmp_path) as router:
            routed = stream_one(router.base_url, sim.model, _request())
        assert routed.status == OK, routed.error
        assert routed.output_token_ids == direct.output_token_ids


class Pieces:
    """A stream that arrives in the given pieces (aiohttp's StreamReader.iter_any hands over what has arrived)."""
    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces

    async def iter_any(self):
        for p in self.pieces:
            yield p


def _lines(*pieces: bytes) -> list[bytes]:
    async def collect():
        return [line async for line in sse.lines(Pieces(*pieces))]
    return asyncio.run(collect())


def test_sse_lines_of_any_length_across_pieces():
    long = b"data: " + b"7" * 900_000 + b"\n"                    # past aiohttp's 512 KiB line limit
    assert _lines(long[:100], long[100:600_000], long[600_000:] + b"\n") == [long, b"\n"]
    assert _lines(b"data: a\r\n\r\nda", b"ta: b\n") == [b"data: a\r\n", b"\r\n", b"data: b\n"]   # CRLF kept
    assert _lines(b"data: x\ndata: [DONE]") == [b"data: x\n", b"data: [DONE]"]   # last line without a newline
    assert _lines() == []
