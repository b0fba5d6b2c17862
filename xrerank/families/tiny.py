"""What every tiny random model is made of: a corpus, and tokenizers trained on it here (no hub).

Each family builds its model from these in a few seconds; the shapes are the real architectures',
the sizes a few hundred kilobytes, the scores meaningless.
"""

from __future__ import annotations

import json
import random

WORDS = (
    "what is the capital of france paris beijing shanghai apple fruit fibre company phone model "
    "great wall dynasty motors tesla factory inventor edison python code performance cython "
    "javascript async climate change polar ecology ice bear ocean rerank document query search "
    "retrieval vector index machine learning artificial intelligence model weights server"
).split()
CJK = "中国的首都是哪里苹果公司最新发布手机型号长城建造于哪个朝代特斯拉在工厂位于如何提高代码性能气候变化极地生态"
# Wide initial weights, so that random scores spread out instead of all sitting near 0.5.
SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
         "initializer_range": 0.2}  # fmt: skip


def corpus(seed: int, lines: int = 600) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(12)) + " " + "".join(rng.choice(CJK) for _ in range(6))
        for _ in range(lines)
    ]


def unigram_vocab(seed: int, size: int, specials: list[str], unk: str) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary, as XLM-RoBERTa's and DeBERTa-v2's tokenizers take it."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁")]
    )
    trainer = UnigramTrainer(vocab_size=size, special_tokens=specials, unk_token=unk, show_progress=False)
    tokenizer.train_from_iterator(corpus(seed), trainer=trainer)
    return [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]


def wordpiece_vocab(seed: int, size: int, specials: list[str]) -> dict[str, int]:
    """A BERT-style WordPiece vocabulary."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(corpus(seed), trainer=trainer)
    return tokenizer.get_vocab()
