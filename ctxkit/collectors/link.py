"""The link a KV handoff crosses, measured in the same run: what the hardware moves, against which a connector's
achieved rate is read as an efficiency (summary.profiling.kv_transfer.link; definitions in docs/metrics.md).

- GPUs: peer copies from the prefill GPU to the decode GPU with torch, once as one large buffer and once as the
  handoff's own descriptor size (one KV block of one layer, K or V: what NixlConnector posts per descriptor),
  issued one by one as a transfer engine posting one descriptor per block would. Runs in a subprocess, so that no
  CUDA context stays in the kernel beside the servers.
- CPU tier: ExampleConnector writes one safetensors file per layer into a tmpfs folder and the decode side reads it
  back: a write plus a read of the same bytes, as one large file and as per-layer files of the handoff's size.

    python -m ctxkit.collectors.link --gpu SRC DST BYTES PIECE     (JSON on stdout; what probe() runs on GPUs)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ctxkit.models import ModelCard

LARGE_BYTES = 256 << 20          # the one-buffer rate: large enough that launch and setup costs vanish
MAX_PIECES = 8192                # descriptor-size copies per pass (time-bounded)


def _rate(nbytes: int, seconds: float) -> dict[str, Any]:
    return {"bytes": int(nbytes), "seconds": seconds, "gb_per_s": nbytes / seconds / 1e9 if seconds > 0 else None}


def descriptor_bytes(card: ModelCard, block_size: int, kind: str, tokens: int, cross_layers: bool = False) -> int:
    """The unit a connector moves: on GPUs one block of one layer's K (or V) tensor, or with cross-layer blocks
    one block of every layer's K and V (one region for the whole cache); on the CPU tier one layer's file (K and V
    of every stored token)."""
    per_layer_token = card.kv_bytes_per_token() // card.num_layers          # K and V
    if kind != "gpu":
        return max(1, tokens) * per_layer_token
    return block_size * card.kv_bytes_per_token() if cross_layers else block_size * per_layer_token // 2


def tmpfs_copy(folder: Path, total: int, piece: int, repeats: int = 3) -> dict[str, Any]:
    """Write then read `total` bytes through files in `folder`, as one file and as files of `piece` bytes; the best
    of `repeats` rounds (the first pays for page faults)."""
    folder = Path(tempfile.mkdtemp(prefix="link-probe-", dir=folder))
    data = memoryview(np.random.default_rng(0).integers(0, 255, size=total, dtype=np.uint8).tobytes())
    out: dict[str, Any] = {}
    try:
        for name, size in (("large", total), ("descriptor", piece)):
            size = min(size, total)
            n = max(1, min(MAX_PIECES, total // size))
            paths = [folder / f"{name}-{i}.bin" for i in range(n)]
            buf = bytearray(b"\1" * size)                 # touched: no page faults inside the timed reads
            best: Optional[tuple[float, float, float]] = None
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i, p in enumerate(paths):
                    with open(p, "wb") as fh:
                        fh.write(data[i * size:(i + 1) * size])
                t1 = time.perf_counter()
                for p in paths:
                    with open(p, "rb") as fh:
                        fh.readinto(buf)
                t2 = time.perf_counter()
                for p in paths:
                    p.unlink()
                if best is None or t2 - t0 < best[1] - best[0] + best[2] - best[1]:
                    best = (t0, t1, t2)
            assert best is not None                  # repeats >= 1
            t0, t1, t2 = best
            moved = n * size
            out[name] = {**_rate(moved, t2 - t0), "piece_bytes": size, "pieces": n,
                         "write_gb_per_s": moved / (t1 - t0) / 1e9, "read_gb_per_s": moved / (t2 - t1) / 1e9}
    finally:
        for p in folder.glob("*"):
            p.unlink()
        folder.rmdir()
    return out


def gpu_copy(src: int, dst: int, total: int, piece: int, repeats: int = 3) -> dict[str, Any]:
    """Peer copies src -> dst with torch: one `total`-byte buffer (best of `repeats`), and `piece`-byte copies."""
    import torch

    a = torch.empty(total, dtype=torch.uint8, device=f"cuda:{src}")
    b = torch.empty(total, dtype=torch.uint8, device=f"cuda:{dst}")

    def timed(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize(src)
        torch.cuda.synchronize(dst)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(src)
        torch.cuda.synchronize(dst)
        return time.perf_counter() - t0

    b.copy_(a)                                          # first touch: peer mappings, allocator
    large = min(timed(lambda: b.copy_(a, non_blocking=True)) for _ in range(repeats))
    n = max(1, min(MAX_PIECES, total // piece))
    srcs = [a[i * piece:(i + 1) * piece] for i in range(n)]
    dsts = [b[i * piece:(i + 1) * piece] for i in range(n)]

    def pieces() -> None:
        for s, d in zip(srcs, dsts):
            d.copy_(s, non_blocking=True)
    pieces()
    small = min(timed(pieces) for _ in range(repeats))
    return {"large": {**_rate(total, large), "piece_bytes": total, "pieces": 1},
            "descriptor": {**_rate(n * piece, small), "piece_bytes": piece, "pieces": n},
            "peer_access": bool(torch.cuda.can_device_access_peer(src, dst)) if src != dst else None,
            "devices": [torch.cuda.get_device_name(src), torch.cuda.get_device_name(dst)]}


def _gpu_subprocess(src: int, dst: int, total: int, piece: int, timeout_s: float = 120) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ctxkit.collectors.link", "--gpu", str(src), str(dst), str(total), str(piece)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    if done.returncode != 0:
        return {"available": False, "reason": f"GPU copy probe failed: {done.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _first_gpu(server: dict[str, Any]) -> Optional[int]:
    dev = str(server["env"].get("CUDA_VISIBLE_DEVICES", "")).split(",")[0].strip()
    return int(dev) if dev.isdigit() else None


def probe(placement: dict[str, Any], card: ModelCard, block_size: int, tokens: int,
          storage: Optional[Path] = None, cross_layers: bool = False) -> dict[str, Any]:
    """The link between the first prefill and the first decode server of a placement, for a handoff of `tokens`
    prompt tokens: {kind, path, large: {bytes, seconds, gb_per_s, ...}, descriptor: {...}} or why not."""
    kind = placement.get("kind", "cpu")
    piece = descriptor_bytes(card, block_size, kind, tokens, cross_layers)
    servers = placement.get("servers") or []
    try:
        if kind == "gpu":
            src = next((_first_gpu(s) for s in servers if s["role"] == "prefill"), None)
            dst = next((_first_gpu(s) for s in servers if s["role"] == "decode"), None)
            if src is None or dst is None:
                return {"available": False, "reason": "no prefill or decode GPU in the placement"}
            result = _gpu_subprocess(src, dst, LARGE_BYTES, piece)
            path = f"GPU {src} -> GPU {dst} (torch peer copy)" if src != dst else f"GPU {src} (device-local copy)"
        else:
            folder = Path(storage) if storage else Path("/dev/shm" if Path("/dev/shm").is_dir()
                                                         else tempfile.gettempdir())
            total = max(piece, min(LARGE_BYTES, 64 << 20))
            result = tmpfs_copy(folder, total, piece)
            path = f"write + read through {folder} (ExampleConnector's folder)"
    except Exception as exc:  # noqa: BLE001 - a link probe that cannot run is reported, the run goes on
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    if result.get("available") is False:
        return result
    return {"available": True, "kind": kind, "path": path, "block_size": block_size, "tokens": tokens,
            "cross_layer_blocks": cross_layers, **result}


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU peer-copy probe (JSON on stdout)")
    ap.add_argument("--gpu", nargs=4, type=int, metavar=("SRC", "DST", "BYTES", "PIECE"), required=True)
    src, dst, total, piece = ap.parse_args().gpu
    print(json.dumps(gpu_copy(src, dst, total, piece)))


if __name__ == "__main__":
    main()
