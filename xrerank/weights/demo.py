"""The demo model, generated on this machine: random weights, bge-reranker-v2-m3's architecture."""

from __future__ import annotations

from pathlib import Path

from xrerank.weights import Fetched, WeightSource, read_config_file
from xrerank.weights.generated import DEMO_CONFIG, DEMO_VOCAB_SIZE, make_demo_model
from xrerank.weights.modeldir import read_complete_manifest


class Demo(WeightSource):
    name = "demo"

    def ensure(self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None) -> Fetched:
        changed = read_complete_manifest(directory) is None
        make_demo_model(directory)
        return Fetched(directory, read_complete_manifest(directory) or {}, changed)

    def read_config(
        self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None
    ) -> dict | None:
        return read_config_file(directory) or {**DEMO_CONFIG, "vocab_size": DEMO_VOCAB_SIZE}


SOURCE = Demo()
