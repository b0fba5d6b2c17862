"""DeBERTa-v2/v3 cross-encoders: mixedbread-ai/mxbai-rerank-base-v1."""

from __future__ import annotations

from pathlib import Path

from xrerank.families.cross_encoder import CrossEncoderFamily, save
from xrerank.families.tiny import SMALL, unigram_vocab

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # ids 0-3 as in DeBERTa-v3


class DebertaV2(CrossEncoderFamily):
    name = "deberta-v2"
    title = "DeBERTa-v2 cross-encoder"
    examples = ("mixedbread-ai/mxbai-rerank-base-v1", "mixedbread-ai/mxbai-rerank-xsmall-v1")
    model_types = frozenset({"deberta-v2"})
    demo_id = "xrerank/demo-mxbai-rerank"

    def write_tiny_model(self, directory: Path, seed: int) -> None:
        import torch
        from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Tokenizer

        vocab = unigram_vocab(seed, 600, SPECIAL_TOKENS, "[UNK]")
        tokenizer = DebertaV2Tokenizer(vocab=vocab, model_max_length=512)
        config = DebertaV2Config(
            vocab_size=len(vocab), max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
            position_buckets=32, pos_att_type=["p2c", "c2p"], position_biased_input=False, num_labels=1,
            pad_token_id=0, **SMALL,
        )  # fmt: skip
        torch.manual_seed(seed)
        save(DebertaV2ForSequenceClassification(config), tokenizer, directory)


FAMILY = DebertaV2()
