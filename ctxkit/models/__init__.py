"""Model cards: an architecture (config.json) plus tokenizer files, served with dummy weights.

A card answers the sizing questions the experiments need (parameters, weight bytes, KV bytes per token) without
loading anything. `model_source` in the parameters may also be a local path or a hub id with real weights; then
the card is only used for those sizing numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARDS_DIR = Path(__file__).resolve().parent
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4, "fp8": 1}


class UnknownModelCard(ValueError):
    pass


def available_cards() -> list[str]:
    return sorted(p.parent.name for p in CARDS_DIR.glob("*/config.json"))


@dataclass(frozen=True)
class ModelCard:
    name: str
    path: Path
    config: dict[str, Any]

    @classmethod
    def load(cls, name_or_path: str) -> "ModelCard":
        """A card by name (ctxkit/models/<name>) or any folder holding a config.json."""
        candidate = CARDS_DIR / name_or_path
        if "/" not in name_or_path and (candidate / "config.json").is_file():
            path = candidate
        elif (Path(name_or_path) / "config.json").is_file():
            path = Path(name_or_path).resolve()
        else:
            raise UnknownModelCard(
                f"no model card {name_or_path!r}: cards are {', '.join(available_cards())}, "
                "or give a folder holding config.json")
        return cls(name=path.name, path=path, config=json.loads((path / "config.json").read_text()))

    # --- architecture -------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def num_heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def num_kv_heads(self) -> int:
        return int(self.config.get("num_key_value_heads", self.num_heads))

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.hidden_size // self.num_heads)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def max_position_embeddings(self) -> int:
        return int(self.config["max_position_embeddings"])

    @property
    def dtype(self) -> str:
        return str(self.config.get("torch_dtype", "bfloat16"))

    # --- sizing --------------------------------------------------------------------------------------
    def parameter_count(self) -> int:
        """Parameters of a Llama-style decoder (attention without bias, gated MLP, RMSNorms)."""
        h, inter, layers = self.hidden_size, int(self.config["intermediate_size"]), self.num_layers
        q = h * self.num_heads * self.head_dim
        kv = 2 * h * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * h
        mlp = 3 * h * inter
        norms = 2 * h
        embed = self.vocab_size * h
        lm_head = 0 if self.config.get("tie_word_embeddings", False) else self.vocab_size * h
        return embed + layers * (q + kv + o + mlp + norms) + h + lm_head

    def weight_bytes(self, dtype: str | None = None) -> int:
        return self.parameter_count() * DTYPE_BYTES[dtype or self.dtype]

    def kv_bytes_per_token(self, dtype: str | None = None) -> int:
        """K and V for every layer: 2 x layers x kv_heads x head_dim x dtype bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * DTYPE_BYTES[dtype or self.dtype]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "architecture": (self.config.get("architectures") or ["?"])[0],
            "layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "heads": self.num_heads,
            "kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "dtype": self.dtype,
            "parameters": self.parameter_count(),
            "weight_bytes": self.weight_bytes(),
            "kv_bytes_per_token": self.kv_bytes_per_token(),
        }
