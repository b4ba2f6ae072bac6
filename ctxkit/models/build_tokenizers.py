"""Build the model cards' tokenizers (run once; the results are committed).

    python -m ctxkit.models.build_tokenizers

A byte-level BPE (GPT-2/Llama-3 style pre-tokenization, so any UTF-8 text round-trips) trained with the
`tokenizers` library on a deterministic corpus: the text of this Python's standard-library sources, sorted by
path, capped at CORPUS_BYTES. No download is needed. Weights are dummy anyway (`--load-format dummy`), so the
tokenizer only has to be valid and to cover the card's vocabulary: ids above the trained vocabulary (the 8B card's
128,256) are filled with reserved tokens, the way Llama 3 itself reserves ids.
"""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).resolve().parent
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
TRAINED_VOCAB = 4096
CORPUS_BYTES = 8_000_000


def corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        texts.append(text)
        total += len(text)
        if total >= CORPUS_BYTES:
            break
    return texts


def train_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCAB,
        special_tokens=[BOS, EOS],  # ids 0 and 1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def with_bos(tok_json: dict, bos: str, bos_id: int) -> dict:
    """Prepend BOS to every encoding, as Llama 3's tokenizer does."""
    tok_json["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 0}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    return tok_json


def extend_vocab(tok_json: dict, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    """Fill the BPE vocabulary up to vocab_size, moving BOS/EOS to the card's ids (reserved tokens elsewhere)."""
    vocab: dict[str, int] = tok_json["model"]["vocab"]
    del vocab[BOS], vocab[EOS]
    used = set(vocab.values())
    for i in range(vocab_size):
        if i in used:
            continue
        name = BOS if i == bos_id else EOS if i == eos_id else f"<|reserved_{i}|>"
        vocab[name] = i
    for added in tok_json["added_tokens"]:
        added["id"] = bos_id if added["content"] == BOS else eos_id
    return tok_json


def tokenizer_config(max_len: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }


def write_card_tokenizer(card_dir: Path, tok_json: dict) -> None:
    config = json.loads((card_dir / "config.json").read_text())
    (card_dir / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False, separators=(",", ":")))
    (card_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(config["max_position_embeddings"]), indent=2) + "\n")
    Tokenizer.from_file(str(card_dir / "tokenizer.json"))  # it loads


def main() -> None:
    base = json.loads(train_bpe().to_str())
    tiny = with_bos(json.loads(json.dumps(base)), BOS, 0)
    write_card_tokenizer(HERE / "tiny-llama", tiny)
    big = extend_vocab(json.loads(json.dumps(base)), 128256, bos_id=128000, eos_id=128001)
    write_card_tokenizer(HERE / "llama-3.1-8b", with_bos(big, BOS, 128000))
    print("wrote tokenizers for tiny-llama and llama-3.1-8b")


if __name__ == "__main__":
    main()
