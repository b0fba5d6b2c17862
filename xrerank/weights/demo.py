"""Demo weights, generated on this machine: random weights of one reranker family's architecture.

`model_id` picks the family (`xrerank/demo-qwen3-reranker`, ...); without one, bge-reranker-v2-m3's.
"""

from __future__ import annotations

from pathlib import Path

from xrerank.errors import BadInput
from xrerank.families import by_demo_id, demo_families
from xrerank.weights import Fetched, WeightSource, read_config_file
from xrerank.weights.generated import DEMO_CONFIG, DEMO_MODEL_ID, DEMO_VOCAB_SIZE, make_demo_model
from xrerank.weights.modeldir import read_complete_manifest


class Demo(WeightSource):
    name = "demo"

    def problem(self, model_id: str | None, directory: str | None) -> str | None:
        if model_id is not None and by_demo_id(model_id) is None:
            return f"model_id {model_id!r} is no demo; the demos: {', '.join(f.demo_id for f in demo_families())}"
        return None

    def is_complete(self, directory: Path, model_id: str | None = None) -> bool:
        manifest = read_complete_manifest(directory)
        wanted = model_id or DEMO_MODEL_ID
        if manifest is not None and manifest.get("model_id") != wanted:
            raise BadInput(
                f"{directory} holds another demo ({manifest.get('model_id')}), not {wanted}; give weights.dir "
                "another directory, or remove that one"
            )
        return manifest is not None

    def ensure(self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None) -> Fetched:
        changed = read_complete_manifest(directory) is None
        family = by_demo_id(model_id or DEMO_MODEL_ID)
        make_demo_model(directory, family=family.name if family else "xlm-roberta")
        return Fetched(directory, read_complete_manifest(directory) or {}, changed)

    def read_config(
        self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None
    ) -> dict | None:
        found = read_config_file(directory)
        if found is None and (model_id or DEMO_MODEL_ID) == DEMO_MODEL_ID:
            return {**DEMO_CONFIG, "vocab_size": DEMO_VOCAB_SIZE}
        return found  # another family's demo: known once generated


SOURCE = Demo()
