"""Model cards: architecture numbers, sizing answers, tokenizers that load and cover the vocabulary."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from ctxkit.models import ModelCard, UnknownModelCard, available_cards


def test_cards_present():
    assert {"tiny-llama", "llama-3.1-8b"} <= set(available_cards())


def test_llama_8b_sizing_matches_the_published_architecture():
    card = ModelCard.load("llama-3.1-8b")
    assert card.parameter_count() == 8_030_261_248          # Llama 3.1 8B
    assert card.weight_bytes() == 16_060_522_496             # bf16
    assert card.kv_bytes_per_token() == 131_072              # 2 x 32 x 8 x 128 x 2 (FACTS.md measured the same)
    cfg = card.config
    assert cfg["rope_scaling"]["rope_type"] == "llama3" and cfg["rope_theta"] == 500000.0
    assert card.max_position_embeddings == 131072


def test_tiny_sizing():
    card = ModelCard.load("tiny-llama")
    assert (card.num_layers, card.hidden_size, card.num_heads, card.num_kv_heads, card.head_dim) == (4, 256, 4, 2, 64)
    assert card.kv_bytes_per_token() == 2 * 4 * 2 * 64 * 2
    assert card.parameter_count() == 4096 * 256 * 2 + 4 * (256 * 256 * 2 + 2 * 256 * 128 + 3 * 256 * 688 + 512) + 256


@pytest.mark.parametrize("name", ["tiny-llama", "llama-3.1-8b"])
def test_tokenizer_covers_vocab_and_round_trips(name):
    card = ModelCard.load(name)
    tok = Tokenizer.from_file(str(card.path / "tokenizer.json"))
    assert tok.get_vocab_size() == card.vocab_size
    text = "def hello(x):\n    return 'wörld' + x  # ✓"
    enc = tok.encode(text)
    assert enc.ids[0] == card.config["bos_token_id"]
    assert tok.decode(enc.ids) == text
    tk_cfg = json.loads((card.path / "tokenizer_config.json").read_text())
    assert tok.token_to_id(tk_cfg["eos_token"]) == card.config["eos_token_id"]


def test_unknown_card_names_the_choices():
    with pytest.raises(UnknownModelCard, match="tiny-llama"):
        ModelCard.load("gpt-17")
