"""Model cards: architecture numbers, sizing answers, tokenizers that load and cover the vocabulary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from ctxkit.models import ModelCard, UnknownModelCard, available_cards


def test_cards_present():
    assert {"tiny-llama", "llama-3.1-8b"} <= set(available_cards())


def test_llama_8b_sizing_matches_the_published_architecture():
    card = ModelCard.load("llama-3.1-8b")
    assert card.parameter_count() == 8_030_261_248          # Llama 3.1 8B
    assert card.weight_bytes() == 16_060_522_496             # bf16
    assert card.kv_bytes_per_token() == 131_072              # 2 x 32 x 8 x 128 x 2 (vLLM's KV cache on an H200 holds the same)
    cfg = card.config
    assert cfg["rope_scaling"]["rope_type"] == "llama3" and cfg["rope_theta"] == 500000.0
    assert card.max_position_embeddings == 131072


def llama(hidden, inter, layers, heads, kv_heads, vocab, tied, head_dim=None):
    cfg = {"hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
           "tie_word_embeddings": tied, "max_position_embeddings": 4096}
    if head_dim:
        cfg["head_dim"] = head_dim
    return ModelCard("published", Path("."), cfg)


# Parameter counts as their model cards publish them (the safetensors metadata "total" on the hub), for
# architectures of the family the formula covers: MHA and GQA, tied and untied embeddings.
@pytest.mark.parametrize("card, published", [
    (llama(4096, 11008, 32, 32, 32, 32000, False), 6_738_415_616),              # Llama 2 7B
    (llama(2048, 5632, 22, 32, 4, 32000, False), 1_100_048_384),                 # TinyLlama 1.1B
    (llama(2048, 8192, 16, 32, 8, 128256, True, head_dim=64), 1_235_814_400),    # Llama 3.2 1B (tied)
    (llama(5120, 13824, 40, 40, 40, 32000, False), 13_015_864_320),             # Llama 2 13B
], ids=["llama-2-7b", "tinyllama-1.1b", "llama-3.2-1b", "llama-2-13b"])
def test_parameter_count_matches_published_counts(card, published):
    assert card.parameter_count() == published


def test_tiny_sizing():
    card = ModelCard.load("tiny-llama")
    assert (card.num_layers, card.hidden_size, card.num_heads, card.num_kv_heads, card.head_dim) == (4, 256, 4, 2, 64)
    assert card.kv_bytes_per_token() == 2048                 # 2 (K, V) x 4 layers x 2 heads x 64 x 2 bytes


def test_tiny_count_matches_an_instantiated_model():
    """The tiny card has no published count: count the parameters of the model transformers builds from its
    config.json (on the meta device: no memory, no weights)."""
    import torch  # both come with vLLM: a missing one is a broken install, not a reason to skip
    import transformers
    card = ModelCard.load("tiny-llama")
    config = transformers.AutoConfig.from_pretrained(card.path)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert card.parameter_count() == sum(p.numel() for p in model.parameters())


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
