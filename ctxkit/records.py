"""Plain records every layer shares. One RequestRecord per request, written to requests.jsonl.

All times are `time.perf_counter_ns()` of the client process (one monotonic clock), see docs/design.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

# Error taxonomy of a request (RequestRecord.status).
OK = "ok"
HTTP_ERROR = "http_error"        # the server answered with a non-2xx status
TIMEOUT = "timeout"              # the request ran past its timeout
DISCONNECT = "disconnect"        # the connection broke (refused, reset, closed)
TRUNCATED = "truncated"          # the stream ended without its final [DONE]
PROTOCOL_ERROR = "protocol_error"  # the server sent something that is not the OpenAI stream format
CANCELLED = "cancelled"          # the client stopped it (a probe that ended early); its partial times are kept
STATUSES = (OK, HTTP_ERROR, TIMEOUT, DISCONNECT, TRUNCATED, PROTOCOL_ERROR, CANCELLED)


@dataclass
class RequestRecord:
    request_id: str
    prompt_tokens: int
    max_tokens: int
    t_sched_ns: int = 0
    t_send_ns: int = 0
    t_first_ns: Optional[int] = None
    t_last_ns: Optional[int] = None
    t_end_ns: Optional[int] = None
    # One entry per chunk that carried generated tokens: (time ns, number of tokens in the chunk).
    chunk_times_ns: list[int] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    output_text: str = ""
    n_out: int = 0                  # from the server's usage field when present
    usage_prompt_tokens: Optional[int] = None
    status: str = OK
    http_status: Optional[int] = None
    error: Optional[str] = None
    warmup: bool = False
    route: Optional[str] = None     # instance(s) that served it
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RequestRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def failures(records: "list[RequestRecord]", limit: int = 3, expected: tuple[str, ...] = ()) -> list[str]:
    """The first `limit` failed requests as 'id: status: error' (statuses in `expected`, e.g. a hold level's
    cancellations, are not failures): what a failed check shows, so that a failure says why without the run
    folder."""
    return [f"{r.request_id}: {r.status}: {r.error}" for r in records
            if not r.ok and r.status not in expected][:limit]


@dataclass
class HandoffRecord:
    """One disaggregated request's KV handoff, as the router saw it (times on the client's clock, see
    docs/metrics.md for how transfer_ms is measured per connector)."""
    handoff_id: str
    request_id: str
    prefill_instance: str
    decode_instance: str
    connector: str
    prompt_tokens: int
    kv_tokens: int = 0
    kv_bytes_expected: int = 0
    kv_bytes_measured: Optional[int] = None
    transfer_ms: Optional[float] = None        # see docs/metrics.md
    decode_step_ms: Optional[float] = None     # the decode stream's own median inter-token gap
    t_recv_ns: int = 0
    t_prefill_sent_ns: int = 0
    t_prefill_done_ns: Optional[int] = None
    t_kv_ready_ns: Optional[int] = None
    t_decode_sent_ns: Optional[int] = None
    t_decode_first_ns: Optional[int] = None
    t_end_ns: Optional[int] = None
    status: str = "ok"
    error: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class JsonlWriter:
    """Append records to a JSONL file one line at a time, flushed, so a crash loses at most the line in flight."""

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, record: RequestRecord | dict[str, Any]) -> None:
        data = record.to_json() if isinstance(record, RequestRecord) else record
        self._fh.write(json.dumps(data, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: "os.PathLike[str] | str") -> list[RequestRecord]:
    with open(path, encoding="utf-8") as fh:
        return [RequestRecord.from_json(json.loads(line)) for line in fh if line.strip()]
