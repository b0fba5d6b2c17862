"""Tiny random-weight models of each reranker family, for offline smoke tests.

Each has its family's real architecture and a tokenizer trained here on generated text, so it
takes the same code path as the real model through transformers, sentence-transformers and
Xinference, in well under a megabyte (xrerank/families/ builds them). Their scores are meaningless.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from xrerank.errors import BadInput, require_server_side
from xrerank.families import by_name
from xrerank.families.xlm_roberta import DEMO_CONFIG, DEMO_VOCAB_SIZE
from xrerank.families.xlm_roberta import FAMILY as XLM_ROBERTA
from xrerank.weights.modeldir import read_complete_manifest, write_manifest

DEMO_MODEL_ID = "xrerank/demo-bge-reranker-v2-m3"
RANDOM_MODEL_PREFIX = "xrerank/"  # every model_id this module generates: random weights


def is_random_model(model_id: str | None) -> bool:
    return bool(model_id) and str(model_id).startswith(RANDOM_MODEL_PREFIX)


DEMO_WARNING = "demo model: random weights, its scores are meaningless"
__all__ = ["DEMO_CONFIG", "DEMO_VOCAB_SIZE", "make_demo_model", "make_random_model"]


def make_demo_model(directory: str | Path, seed: int = 0, family: str = "xlm-roberta") -> Path:
    """Write the demo model of `family` to `directory` (a no-op when it is already complete)."""
    chosen = by_name(family)
    if not chosen.demo_id:
        raise BadInput(f"no offline demo exists for the {chosen.title} family")
    return _generate(directory, chosen.demo_id, seed, lambda staging: chosen.write_tiny_model(staging, seed))


def make_random_model(directory: str | Path, config: dict, model_id: str, seed: int = 0) -> Path:
    """A random-weight XLM-RoBERTa reranker of any size (benchmarks use a base-size one)."""
    return _generate(directory, model_id, seed, lambda staging: XLM_ROBERTA.write_tiny_model(staging, seed, config))


def _generate(directory: str | Path, model_id: str, seed: int, write: Callable[[Path], None]) -> Path:
    """Write a generated model into a staging directory beside `directory` and rename it into place,
    so `directory` is never half written; staging directories that a killed run left are removed."""
    target = Path(directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise BadInput(f"{target} is a file, not a directory; choose a new directory for the demo model")
    manifest = read_complete_manifest(target)
    if manifest is not None:
        if manifest.get("model_id") != model_id:
            raise _another_model(target, manifest)
        return target
    if target.is_dir() and any(target.iterdir()):
        raise BadInput(f"{target} exists and is not an xrerank model directory; choose an empty or new directory")
    require_server_side("generating a model")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(target)}{os.getpid()}-", dir=target.parent))
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # stderr is for xrerank's own lines
        write(staging)
        write_manifest(staging, {"source": "demo", "model_id": model_id, "revision": f"seed-{seed}"})
        staging.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        try:
            os.rename(staging, target)  # replaces an empty directory; fails on a full one
        except OSError:
            finished = read_complete_manifest(target)  # another run's, done first
            if finished is None:
                raise
            if finished.get("model_id") != model_id:
                raise _another_model(target, finished) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _another_model(target: Path, manifest: dict) -> BadInput:
    return BadInput(f"{target} holds another model ({manifest.get('model_id')}); choose another directory")


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
