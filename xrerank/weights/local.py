"""Weights already on disk, used as they are: checked, never written, never deleted."""

from __future__ import annotations

from pathlib import Path

from xrerank.errors import BadInput
from xrerank.weights import Fetched, WeightSource
from xrerank.weights.modeldir import inspect_model_dir


class Local(WeightSource):
    name = "local"
    owns_weights = False
    needs_dir = True

    def ensure(self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None) -> Fetched:
        inspect_model_dir(directory)
        return Fetched(directory, {}, changed=False)

    def is_complete(self, directory: Path, model_id: str | None = None) -> bool:
        try:
            inspect_model_dir(directory)
        except BadInput:
            return False
        return True


SOURCE = Local()
