"""The KV broker: connector configuration for each role, and one handoff record per disaggregated request.

KV bytes expected come from the model card: 2 x layers x kv_heads x head_dim x dtype bytes x tokens, for the
tokens the connector actually moves (ExampleConnector: whole blocks of prompt[:-1]; NIXL: the prompt's full blocks
as the decode side asks for them). See docs/metrics.md for how transfer_ms is measured per connector.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Optional

from ctxkit.records import HandoffRecord

CONNECTORS = ("example", "nixl")


def cross_layer_blocks(extra: Optional[dict[str, Any]]) -> bool:
    """NixlConnector's `enable_cross_layers_blocks`: one KV region for all layers, so a block of every layer is one
    descriptor (vLLM honours it with FlashAttention/FlashInfer/Triton attention in the HND layout)."""
    return str((extra or {}).get("enable_cross_layers_blocks", "false")).lower() == "true"


def kv_transfer_config(connector: str, role: str, storage_path: Optional[Path] = None,
                       kv_buffer_device: str = "cpu", extra: Optional[dict[str, Any]] = None) -> str:
    """The JSON for vLLM's --kv-transfer-config. role: prefill | decode. `extra` goes into the connector's
    kv_connector_extra_config as given (e.g. NixlConnector's enable_cross_layers_blocks, num_threads, backends)."""
    if connector == "example":
        cfg: dict[str, Any] = {"kv_connector": "ExampleConnector",
                               "kv_role": "kv_producer" if role == "prefill" else "kv_consumer",
                               "kv_connector_extra_config": {"shared_storage_path": str(storage_path)}}
    elif connector == "nixl":
        cfg = {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": kv_buffer_device}
    else:
        raise ValueError(f"unknown connector {connector!r}: {', '.join(CONNECTORS)}")
    if extra:
        cfg["kv_connector_extra_config"] = {**cfg.get("kv_connector_extra_config", {}), **extra}
    return json.dumps(cfg, separators=(",", ":"))


NIXL_PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                       "remote_block_ids": None, "remote_host": None, "remote_port": None}


_ids = itertools.count()


def new_handoff(request_id: str, prefill: str, decode: str, connector: str, prompt_tokens: int,
                kv_tokens: int, kv_bytes_per_token: int, t_recv_ns: int) -> HandoffRecord:
    return HandoffRecord(handoff_id=f"h{next(_ids):06d}", request_id=request_id, prefill_instance=prefill,
                         decode_instance=decode, connector=connector, prompt_tokens=prompt_tokens,
                         kv_tokens=kv_tokens, kv_bytes_expected=kv_tokens * kv_bytes_per_token,
                         t_recv_ns=t_recv_ns)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
