"""Where ExampleConnector keeps a request's KV, and how many bytes it holds.

vLLM's ExampleConnector (v1) stores the KV of the first align(len(prompt) - 1) prompt tokens, whole blocks only
(align(n) = (n - 1) // block_size * block_size), one safetensors file per layer in the folder
<shared_storage_path>/<md5 of those token ids as int64 bytes>/. The decode side looks the folder up the same way.
The connector never deletes anything: ctxkit removes a request's folder once decode has its first token.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np

CPU_BLOCK_SIZE, GPU_BLOCK_SIZE = 128, 16   # vLLM's default KV block size per platform


def block_size_of(extra_args: list[str], kind: str) -> int:
    """The KV block size the servers run with: the last `--block-size N` (or `--block-size=N`) among their extra
    arguments (a later flag wins in vLLM's parser: a topology's own follows the server's), else vLLM's default for
    the platform (`kind`: gpu | cpu)."""
    size = GPU_BLOCK_SIZE if kind == "gpu" else CPU_BLOCK_SIZE
    for i, arg in enumerate(extra_args):
        if arg == "--block-size" and i + 1 < len(extra_args):
            size = int(extra_args[i + 1])
        elif arg.startswith("--block-size="):
            size = int(arg.split("=", 1)[1])
    return size


def stored_tokens(prompt_len: int, block_size: int) -> int:
    """Prompt tokens whose KV the connector stores (and the decode side loads)."""
    n = prompt_len - 1
    return max(0, (n - 1) // block_size * block_size) if n > 0 else 0


def loaded_tokens(connector: str, prompt_len: int, block_size: int) -> tuple[int, int]:
    """(tokens, token slots of bytes) of a prompt's KV the decode server loads through `connector`: its
    prompt_tokens_by_source{external_kv_transfer} grows by the first, and the bytes moved are the second x the
    card's bytes a token. ExampleConnector stores whole blocks short of the last token; NixlConnector moves every
    prompt token's KV as whole blocks (the last one partial)."""
    if connector == "example":
        n = stored_tokens(prompt_len, block_size)
        return n, n
    return prompt_len, -(-prompt_len // block_size) * block_size


def kv_folder(storage: Path, prompt: list[int], block_size: int) -> Path:
    n = stored_tokens(len(prompt), block_size)
    digest = hashlib.md5(np.asarray(prompt[:n], dtype=np.int64).tobytes(), usedforsecurity=False).hexdigest()
    return Path(storage) / digest


def safetensors_data_bytes(path: Path) -> int:
    """Tensor bytes of a safetensors file (its size less the 8-byte length and the JSON header)."""
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
    return sum(end - start for key, meta in header.items() if key != "__metadata__"
               for start, end in [meta["data_offsets"]])


def stored_bytes(folder: Path) -> int:
    return sum(safetensors_data_bytes(p) for p in Path(folder).glob("*.safetensors"))


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
