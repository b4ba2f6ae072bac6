"""Workloads: prompts as exact token-id lists (the completions API accepts them), seeded.

Input lengths: fixed, uniform, normal, lognormal; output lengths fixed (with ignore_eos) or drawn likewise;
shared-prefix groups; replay of a trace file (JSONL `{"timestamp": ms, "input_length": n, "output_length": m,
"hash_ids": [...]}`, equal hash ids = equal 512-token prefix blocks); a ShareGPT-format JSON file (lengths from
its conversations, measured with the model card's tokenizer).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ctxkit.models import ModelCard
from ctxkit.params import WorkloadParams

TRACE_BLOCK_TOKENS = 512


class WorkloadError(ValueError):
    pass


@dataclass
class WorkItem:
    """One request to send: exact prompt ids, output length, and (for traces) its arrival offset."""
    request_id: str
    prompt: list[int]
    max_tokens: int
    arrival_ms: Optional[float] = None
    tags: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)   # more request-body fields for this request (cache_salt)


@dataclass(frozen=True)
class LengthDist:
    """kind: fixed (mean) | uniform (low..high) | normal (mean, std) | lognormal (mean, std of the lengths)."""
    kind: str = "fixed"
    mean: float = 256
    std: float = 0.0
    low: int = 1
    high: int = 0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            out = np.full(n, self.mean)
        elif self.kind == "uniform":
            hi = self.high or int(self.mean)
            if hi < self.low:
                raise WorkloadError(f"uniform lengths: high {hi} < low {self.low}")
            out = rng.integers(self.low, hi + 1, size=n)
        elif self.kind == "normal":
            out = rng.normal(self.mean, self.std, size=n)
        elif self.kind == "lognormal":
            if self.mean <= 0:
                raise WorkloadError("lognormal lengths need mean > 0")
            sigma2 = np.log(1 + (self.std / self.mean) ** 2)
            out = rng.lognormal(np.log(self.mean) - sigma2 / 2, np.sqrt(sigma2), size=n)
        else:
            raise WorkloadError(f"unknown length distribution {self.kind!r}: fixed, uniform, normal, lognormal")
        lo = max(1, self.low)
        out = np.maximum(np.rint(out), lo)
        if self.high:
            out = np.minimum(out, self.high)
        return np.asarray(out, dtype=int)


def random_ids(rng: np.random.Generator, n: int, vocab_size: int, low: int = 16) -> list[int]:
    """Token ids in [low, vocab): no special token appears by chance."""
    return [int(x) for x in rng.integers(low, vocab_size, size=n)]


def synthetic(num: int, input_len: LengthDist, output_len: LengthDist, *, vocab_size: int, seed: int = 0,
              prefix_len: int = 0, num_prefixes: int = 1, id_prefix: str = "req") -> list[WorkItem]:
    """Random prompts; with prefix_len > 0 each prompt starts with one of num_prefixes shared prefixes
    (request i uses prefix i mod num_prefixes), and input_len counts the tokens after the prefix."""
    if num < 1:
        raise WorkloadError("the number of prompts must be >= 1")
    rng = np.random.default_rng(seed)
    ins, outs = input_len.sample(rng, num), output_len.sample(rng, num)
    prefixes = [random_ids(rng, prefix_len, vocab_size) for _ in range(num_prefixes)] if prefix_len else []
    items: list[WorkItem] = []
    for i in range(num):
        prompt = (prefixes[i % num_prefixes] if prefixes else []) + random_ids(rng, int(ins[i]), vocab_size)
        tags = {"prefix_group": i % num_prefixes} if prefixes else {}
        items.append(WorkItem(f"{id_prefix}-{i}", prompt, int(outs[i]), tags=tags))
    return items


def from_trace(path: Path, *, vocab_size: int, seed: int = 0, limit: Optional[int] = None, start_ms: float = 0.0,
               duration_ms: Optional[float] = None, speedup: float = 1.0, id_prefix: str = "trace") -> list[WorkItem]:
    """Replay a trace (JSONL). Equal hash ids share the same 512-token block, so prefix reuse is reproduced. The
    window: rows from start_ms (after the first row) for duration_ms, at most `limit` of them; its arrival offsets
    start at 0 and are divided by `speedup`. Blocks are drawn for every row, so a window's prompts are the ones the
    whole trace has there."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise WorkloadError(f"cannot read trace file {path}: {exc.strerror or exc}") from None
    rng = np.random.default_rng(seed)
    blocks: dict[Any, list[int]] = {}
    items: list[WorkItem] = []
    first: Optional[float] = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ts, n_in, n_out = float(row["timestamp"]), int(row["input_length"]), int(row["output_length"])
            hash_ids = list(row.get("hash_ids") or [])
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkloadError(f"{path}:{n}: not a trace row ({exc}); expected "
                                '{"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}') from None
        if n_in < 1 or n_out < 1:
            raise WorkloadError(f"{path}:{n}: input_length and output_length must be >= 1")
        prompt: list[int] = []
        for h in hash_ids:
            if h not in blocks:
                blocks[h] = random_ids(rng, TRACE_BLOCK_TOKENS, vocab_size)
            prompt.extend(blocks[h])
        prompt = prompt[:n_in] + random_ids(rng, max(0, n_in - len(prompt)), vocab_size)
        first = ts if first is None else first
        if ts - first < start_ms or (duration_ms is not None and ts - first >= start_ms + duration_ms):
            continue
        items.append(WorkItem(f"{id_prefix}-{len(items)}", prompt, n_out, arrival_ms=ts,
                              tags={"hash_ids": hash_ids, "input_length": n_in, "trace_row": n}))
        if limit and len(items) >= limit:
            break
    if not items:
        raise WorkloadError(f"trace file {path} holds no requests" + (" in the window" if start_ms or duration_ms
                                                                       else ""))
    t0 = items[0].arrival_ms or 0.0
    for it in items:
        it.arrival_ms = ((it.arrival_ms or 0.0) - t0) / speedup
    return items


def from_sharegpt(path: Path, tokenizer_path: Path, *, vocab_size: int, num: int, seed: int = 0,
                  max_input: Optional[int] = None, fixed_output: Optional[int] = None) -> list[WorkItem]:
    """Lengths from a ShareGPT JSON file: the first human turn is the prompt, the next turn the output.
    Prompts are the tokenized human turn itself, so lengths and content are the conversation's."""
    from tokenizers import Tokenizer

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WorkloadError(f"cannot read ShareGPT file {path}: {exc}") from None
    tok = Tokenizer.from_file(str(tokenizer_path))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    items: list[WorkItem] = []
    for idx in order:
        conv = data[int(idx)].get("conversations") or data[int(idx)].get("conversation") or []
        if len(conv) < 2:
            continue
        prompt = [i for i in tok.encode(conv[0].get("value", "")).ids if i < vocab_size]
        out_len = fixed_output or len(tok.encode(conv[1].get("value", ""), add_special_tokens=False).ids)
        if len(prompt) < 4 or out_len < 4 or (max_input and len(prompt) > max_input):
            continue
        items.append(WorkItem(f"sharegpt-{len(items)}", prompt, out_len))
        if len(items) >= num:
            break
    if not items:
        raise WorkloadError(f"ShareGPT file {path}: no usable conversations")
    return items


def _dist(kind: str, mean: int, std: float, ratio: float, cap: int) -> LengthDist:
    if kind == "uniform":
        return LengthDist("uniform", mean, low=max(1, int(mean * (1 - ratio))), high=min(cap, int(mean * (1 + ratio))))
    return LengthDist(kind, mean, std, low=1, high=cap)


def build_workload(w: WorkloadParams, card: ModelCard, max_model_len: int, seed: int,
                   count: Optional[int] = None, id_prefix: str = "req") -> list[WorkItem]:
    """The requests a workload's parameters describe; every one fits max_model_len (drawn lengths are capped,
    files are checked)."""
    n = count if count is not None else w.num_prompts
    if w.dataset == "random":
        in_cap = max(1, max_model_len - w.prefix_len - w.output_len)
        items = synthetic(n, _dist(w.input_dist, w.input_len, w.input_std, w.range_ratio, in_cap),
                          _dist(w.output_dist, w.output_len, w.output_std, w.range_ratio, max_model_len),
                          vocab_size=card.vocab_size, seed=seed, prefix_len=w.prefix_len,
                          num_prefixes=w.num_prefixes, id_prefix=id_prefix)
    elif w.dataset == "trace":
        items = from_trace(Path(w.dataset_path or ""), vocab_size=card.vocab_size, seed=seed, limit=n,
                           start_ms=w.trace_start_ms, duration_ms=w.trace_duration_ms, speedup=w.trace_speedup,
                           id_prefix=id_prefix if id_prefix != "req" else "trace")
    else:
        items = from_sharegpt(Path(w.dataset_path or ""), card.path / "tokenizer.json", vocab_size=card.vocab_size,
                              num=n, seed=seed, max_input=max_model_len - w.output_len,
                              fixed_output=w.output_len if w.output_dist == "fixed" else None)
    too_long = [it for it in items if len(it.prompt) + it.max_tokens > max_model_len]
    if too_long:
        it = too_long[0]
        raise WorkloadError(f"{len(too_long)} request(s) exceed max_model_len {max_model_len}: e.g. {it.request_id} "
                            f"has {len(it.prompt)} prompt + {it.max_tokens} output tokens")
    return items
