"""Qwen3-Reranker: a Qwen3 decoder asked "yes" or "no" (Qwen/Qwen3-Reranker-0.6B, -4B, -8B).

Xinference 4.1 scores it only when the registered name contains "qwen3"
(sentence_transformers/core.py): AutoModelForCausalLM in the dtype its config.json names, the
tokenizer padding on the left, each pair put in the system/user prompt below, micro-batches of 4,
and the score P("yes") from a softmax over the last position's ["no", "yes"] logits. Under any
other name the model loads as a CrossEncoder and scores without the prompt: plausible, wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from xrerank.errors import BadInput
from xrerank.families import Family, Pair, architectures, decoder_parameters, model_type
from xrerank.families.tiny import corpus

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MICRO_BATCH = 4
MIN_TOKENS = 128  # the prompt takes ~50 tokens; below that Xinference fails or drops the document
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


class Qwen3(Family):
    name = "qwen3"
    title = "Qwen3-Reranker (yes/no decoder)"
    examples = ("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B")
    route = "the Qwen3-Reranker prompt (a registered name containing 'qwen3')"
    qwen3_name = True
    server_packages = ("transformers", "accelerate")
    batch_pairs = MICRO_BATCH
    min_tokens = MIN_TOKENS
    demo_id = "xrerank/demo-qwen3-reranker"

    def recognises(self, config: dict) -> bool:
        return model_type(config) == "qwen3" and "Qwen3ForCausalLM" in architectures(config)

    def check(self, config: dict, where: Path) -> None:
        if not config.get("vocab_size"):
            raise BadInput(f"{where / 'config.json'}: a Qwen3 decoder without vocab_size")
        missing = [token for token in ("yes", "no") if not _single_token(where, token)]
        if missing:
            raise BadInput(
                f"{where}: the tokenizer has no single {' or '.join(repr(t) for t in missing)} token, which the "
                "Qwen3-Reranker score is read from; this is not a Qwen3-Reranker"
            )

    def parameters(self, config: dict) -> int:
        return decoder_parameters(config, qk_norm=True)

    def scores(self, model_dir: Path, pairs: Sequence[Pair], max_tokens: int | None, device: str,
               dtype: str | None) -> list[float]:  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not max_tokens or max_tokens < MIN_TOKENS:
            raise BadInput(f"a Qwen3-Reranker needs max_tokens of at least {MIN_TOKENS}, got {max_tokens}")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device).eval()  # config.json's dtype
        if dtype and dtype != "float32" and device != "cpu":
            model.to(getattr(torch, dtype))
        prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
        suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
        yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
        texts = [f"<Instruct>: {INSTRUCTION}\n<Query>: {p.query}\n<Document>: {p.document}" for p in pairs]
        scores: list[float] = []
        for start in range(0, len(texts), MICRO_BATCH):  # as the server batches, so the padding is the same
            encoded = tokenizer(texts[start : start + MICRO_BATCH], padding=False, truncation="longest_first",
                                return_attention_mask=False,
                                max_length=max_tokens - len(prefix) - len(suffix))  # fmt: skip
            encoded["input_ids"] = [prefix + ids + suffix for ids in encoded["input_ids"]]
            inputs = tokenizer.pad(encoded, padding=True, return_tensors="pt").to(device)
            with torch.no_grad():
                last = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]
            pair = torch.stack([last[:, no], last[:, yes]], dim=1)
            scores += torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().tolist()
        return scores

    def write_tiny_model(self, directory: Path, seed: int) -> None:
        import torch
        from tokenizers import Tokenizer, decoders, pre_tokenizers
        from tokenizers.models import BPE
        from tokenizers.trainers import BpeTrainer
        from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

        backend = Tokenizer(BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
        backend.train_from_iterator(corpus(seed) + [PREFIX, SUFFIX, INSTRUCTION] * 20, trainer=trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=2048,
        )  # fmt: skip
        tokenizer.add_tokens(["<think>", "</think>", "yes", "no"])  # single tokens, as in Qwen's vocabulary
        config = Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
            tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            initializer_range=0.2, architectures=["Qwen3ForCausalLM"],
        )  # fmt: skip
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(torch.float32)
        model.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)


def _single_token(directory: Path, token: str) -> bool:
    """Is `token` one entry of the tokenizer's vocabulary (tokenizer.json, else vocab.json)? True when
    neither file is readable here: the server's load is then the check."""
    for name in ("tokenizer.json", "vocab.json"):
        try:
            document = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if not isinstance(document, dict):
            return False
        model = document.get("model") if name == "tokenizer.json" else {"vocab": document}
        vocab = model.get("vocab") if isinstance(model, dict) else None
        added = document.get("added_tokens") if name == "tokenizer.json" else None
        in_vocab = isinstance(vocab, dict) and token in vocab
        in_added = isinstance(added, list) and any(isinstance(a, dict) and a.get("content") == token for a in added)
        return in_vocab or in_added
    return True


FAMILY = Qwen3()
