"""KV transfer accounting from the broker's handoff records: bytes, ms, GB/s and stall ratio per handoff and
aggregated (min, max, avg, p50, p95), for summary.profiling.kv_transfer. Definitions in docs/metrics.md."""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from ctxkit.collectors.latency import stats
from ctxkit.records import RequestRecord


def handoff_frame(handoffs: list[dict[str, Any]], records: Optional[list[RequestRecord]] = None,
                  link_gb_per_s: Optional[float] = None) -> pd.DataFrame:
    """One row per handoff; with the client's records, the stall ratio (time waiting on KV / client TTFT); with the
    link's measured rate, the efficiency (achieved GB/s / link GB/s)."""
    rows = []
    ttft = {r.request_id: (r.t_first_ns - r.t_send_ns) / 1e6 for r in records or [] if r.t_first_ns}
    for h in handoffs:
        ms = h.get("transfer_ms")
        measured = h.get("kv_bytes_measured")
        row = {k: h.get(k) for k in ("handoff_id", "request_id", "prefill_instance", "decode_instance", "connector",
                                     "prompt_tokens", "kv_tokens", "kv_bytes_expected", "kv_bytes_measured",
                                     "transfer_ms", "decode_step_ms", "status", "error")}
        row["bytes_ratio"] = measured / h["kv_bytes_expected"] if measured and h.get("kv_bytes_expected") else None
        row["gb_per_s"] = measured / (ms * 1e6) if measured and ms else None
        row["efficiency"] = row["gb_per_s"] / link_gb_per_s if row["gb_per_s"] and link_gb_per_s else None
        def span(a: str, b: str) -> Optional[float]:
            return (h[b] - h[a]) / 1e6 if h.get(a) and h.get(b) else None
        row["router_ms"] = span("t_recv_ns", "t_prefill_sent_ns")
        row["prefill_ms"] = span("t_prefill_sent_ns", "t_prefill_done_ns")
        row["kv_check_ms"] = span("t_prefill_done_ns", "t_kv_ready_ns")
        row["decode_first_ms"] = span("t_decode_sent_ns", "t_decode_first_ns")
        row["router_ttft_ms"] = span("t_recv_ns", "t_decode_first_ns")
        row["client_ttft_ms"] = ttft.get(h["request_id"])
        row["stall_ratio"] = ms / row["client_ttft_ms"] if ms is not None and row["client_ttft_ms"] else None
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    if frame.empty:
        return {"handoffs": 0, "broker_completed_handoffs": 0}
    ok = frame[frame["status"] == "ok"]
    out: dict[str, Any] = {
        "handoffs": int(len(frame)),
        "broker_completed_handoffs": int(len(ok)),
        "failed_handoffs": int(len(frame) - len(ok)),
        "connector": str(frame["connector"].iloc[0]),
        "total_kv_bytes_expected": int(ok["kv_bytes_expected"].sum()),
        "total_kv_bytes_measured": int(ok["kv_bytes_measured"].fillna(0).sum()),
    }
    for col, name in (("kv_bytes_measured", "bytes"), ("transfer_ms", "transfer_ms"), ("gb_per_s", "gb_per_s"),
                      ("stall_ratio", "stall_ratio"), ("bytes_ratio", "measured_over_expected"),
                      ("efficiency", "efficiency")):
        s = stats(v for v in ok[col].tolist() if v is not None and v == v)
        out[name] = {k: s[k] for k in ("count", "min", "max", "avg", "p50", "p95")}
    return out


def link_rate(link: Optional[dict[str, Any]]) -> Optional[float]:
    """The link's one-large-buffer rate (GB/s), the denominator of KV path efficiency; None when not measured."""
    return (link or {}).get("large", {}).get("gb_per_s") if (link or {}).get("available") else None
