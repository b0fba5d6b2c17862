"""XLM-RoBERTa cross-encoders: BAAI/bge-reranker-v2-m3, bge-reranker-base, bge-reranker-large."""

from __future__ import annotations

from pathlib import Path

from xrerank.families.cross_encoder import CrossEncoderFamily, save
from xrerank.families.tiny import SMALL, unigram_vocab

DEMO_VOCAB_SIZE = 522
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-4, as in XLM-RoBERTa
# bge-reranker-v2-m3's architecture at a size that loads in a second.
DEMO_CONFIG = {
    "model_type": "xlm-roberta",
    **SMALL,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "num_labels": 1,
    "architectures": ["XLMRobertaForSequenceClassification"],
}


class XlmRoberta(CrossEncoderFamily):
    name = "xlm-roberta"
    title = "XLM-RoBERTa cross-encoder"
    examples = ("BAAI/bge-reranker-v2-m3", "BAAI/bge-reranker-base", "BAAI/bge-reranker-large")
    model_types = frozenset({"xlm-roberta"})
    position_offset = 2
    demo_id = "xrerank/demo-bge-reranker-v2-m3"

    def write_tiny_model(self, directory: Path, seed: int, settings: dict | None = None) -> None:
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer

        settings = settings or DEMO_CONFIG
        vocab = unigram_vocab(seed, DEMO_VOCAB_SIZE, SPECIAL_TOKENS, "<unk>")
        tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=settings["max_position_embeddings"] - 2)
        torch.manual_seed(seed)
        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(vocab_size=len(vocab), **settings))
        save(model, tokenizer, directory)


FAMILY = XlmRoberta()
