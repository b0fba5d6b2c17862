"""ModernBERT cross-encoders: Alibaba-NLP/gte-reranker-modernbert-base."""

from __future__ import annotations

from pathlib import Path

from xrerank.families.cross_encoder import CrossEncoderFamily, save
from xrerank.families.tiny import SMALL, corpus

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class ModernBert(CrossEncoderFamily):
    name = "modernbert"
    title = "ModernBERT cross-encoder"
    examples = ("Alibaba-NLP/gte-reranker-modernbert-base",)
    model_types = frozenset({"modernbert"})
    demo_id = "xrerank/demo-gte-reranker-modernbert"

    def write_tiny_model(self, directory: Path, seed: int) -> None:
        import torch
        from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece
        from tokenizers.trainers import WordPieceTrainer
        from transformers import ModernBertConfig, ModernBertForSequenceClassification, PreTrainedTokenizerFast

        backend = Tokenizer(WordPiece(unk_token="[UNK]"))
        backend.normalizer = normalizers.BertNormalizer(lowercase=True)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.train_from_iterator(corpus(seed), WordPieceTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS,
                                                                   show_progress=False))  # fmt: skip
        ids = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )  # fmt: skip
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]", model_max_length=1024, model_input_names=["input_ids", "attention_mask"],
        )  # fmt: skip
        config = ModernBertConfig(
            vocab_size=backend.get_vocab_size(), max_position_embeddings=1024, num_labels=1,
            pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"],
            bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"], global_attn_every_n_layers=2,
            local_attention=64, **SMALL,
        )  # fmt: skip
        torch.manual_seed(seed)
        save(ModernBertForSequenceClassification(config), tokenizer, directory)


FAMILY = ModernBert()
