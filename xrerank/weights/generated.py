"""A tiny random-weight model with bge-reranker-v2-m3's architecture, for offline smoke tests.

XLMRobertaForSequenceClassification with one label and a Unigram tokenizer trained here on
generated text: the same code path as the real model through transformers, sentence-transformers
and Xinference, in well under a megabyte. Its scores are meaningless.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from xrerank.errors import BadInput, require_server_side
from xrerank.weights.modeldir import read_complete_manifest, write_manifest

DEMO_MODEL_ID = "xrerank/demo-bge-reranker-v2-m3"
RANDOM_MODEL_PREFIX = "xrerank/"  # every model_id this module generates: random weights


def is_random_model(model_id: str | None) -> bool:
    return bool(model_id) and str(model_id).startswith(RANDOM_MODEL_PREFIX)


DEMO_WARNING = "demo model: random weights, its scores are meaningless"
DEMO_CONFIG = {
    "model_type": "xlm-roberta",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "num_labels": 1,
    # Wide initial weights so that random scores spread out instead of all sitting near 0.5.
    "initializer_range": 0.2,
    "architectures": ["XLMRobertaForSequenceClassification"],
}
DEMO_VOCAB_SIZE = 522
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-4, as in XLM-RoBERTa
_WORDS = (
    "what is the capital of france paris beijing shanghai apple fruit fibre company phone model "
    "great wall dynasty motors tesla factory inventor edison python code performance cython "
    "javascript async climate change polar ecology ice bear ocean rerank document query search "
    "retrieval vector index machine learning artificial intelligence model weights server"
).split()
_CJK = "中国的首都是哪里苹果公司最新发布手机型号长城建造于哪个朝代特斯拉在工厂位于如何提高代码性能气候变化极地生态"


def make_demo_model(directory: str | Path, seed: int = 0) -> Path:
    """Write the demo model to `directory` (a no-op when it is already complete) and return its path."""
    return make_random_model(directory, DEMO_CONFIG, DEMO_MODEL_ID, seed)


def make_random_model(directory: str | Path, config: dict, model_id: str, seed: int = 0) -> Path:
    """A random-weight XLM-RoBERTa reranker of any size (benchmarks use a base-size one).

    The model is written into a staging directory beside `directory` and renamed into place, so
    `directory` is never half written; staging directories that a killed run left are removed."""
    target = Path(directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise BadInput(f"{target} is a file, not a directory; choose a new directory for the demo model")
    if read_complete_manifest(target) is not None:
        return target
    if target.is_dir() and any(target.iterdir()):
        raise BadInput(f"{target} exists and is not an xrerank model directory; choose an empty or new directory")
    require_server_side("generating a model")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(target)}{os.getpid()}-", dir=target.parent))
    try:
        _write_model(staging, config, seed)
        write_manifest(staging, {"source": "demo", "model_id": model_id, "revision": f"seed-{seed}"})
        staging.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        try:
            os.rename(staging, target)  # replaces an empty directory; fails on a full one
        except OSError:
            if read_complete_manifest(target) is None:  # not another run's finished model
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.xrerank-staging-"


def _remove_abandoned_staging(target: Path) -> None:
    """Staging directories of runs that were killed (their pid is gone): ours by their name."""
    import psutil

    prefix = _staging_prefix(target)
    for leftover in target.parent.glob(f"{prefix}*"):
        pid = leftover.name[len(prefix) :].split("-", 1)[0]
        if leftover.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _write_model(directory: Path, settings: dict, seed: int) -> None:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer

    vocab = _train_vocab(seed)
    tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=settings["max_position_embeddings"] - 2)
    config = XLMRobertaConfig(vocab_size=len(vocab), **settings)
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def _train_vocab(seed: int) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    rng = random.Random(seed)
    lines = [
        " ".join(rng.choice(_WORDS) for _ in range(12)) + " " + "".join(rng.choice(_CJK) for _ in range(6))
        for _ in range(600)
    ]
    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁")]
    )
    trainer = UnigramTrainer(
        vocab_size=DEMO_VOCAB_SIZE, special_tokens=_SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
