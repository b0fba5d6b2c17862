"""BERT cross-encoders: cross-encoder/ms-marco-MiniLM-L6-v2 and its kin."""

from __future__ import annotations

from pathlib import Path

from xrerank.families.cross_encoder import CrossEncoderFamily, save
from xrerank.families.tiny import SMALL, wordpiece_vocab

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class Bert(CrossEncoderFamily):
    name = "bert"
    title = "BERT cross-encoder"
    examples = ("cross-encoder/ms-marco-MiniLM-L6-v2", "cross-encoder/ms-marco-MiniLM-L12-v2")
    model_types = frozenset({"bert"})
    demo_id = "xrerank/demo-ms-marco-minilm"

    def write_tiny_model(self, directory: Path, seed: int) -> None:
        import torch
        from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

        vocab = wordpiece_vocab(seed, 600, SPECIAL_TOKENS)
        tokenizer = BertTokenizer(vocab=vocab, model_max_length=512)
        config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, num_labels=1,
                            pad_token_id=vocab["[PAD]"], **SMALL)  # fmt: skip
        torch.manual_seed(seed)
        save(BertForSequenceClassification(config), tokenizer, directory)


FAMILY = Bert()
