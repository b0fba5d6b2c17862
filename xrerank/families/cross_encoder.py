"""What the cross-encoder families share: a one-label *ForSequenceClassification model, scored by
sentence-transformers' CrossEncoder on the server (Xinference 4.1's `type: normal` path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xrerank.errors import BadInput
from xrerank.families import Family, Pair, architectures, model_type


class CrossEncoderFamily(Family):
    model_types: frozenset[str] = frozenset()
    route = "sentence-transformers' CrossEncoder (type: normal, a name without 'qwen3')"
    position_offset = 0  # RoBERTa-like models number positions from padding_idx + 1
    trust_remote_code = False

    def recognises(self, config: dict) -> bool:
        return model_type(config) in self.model_types and any(
            a.endswith("ForSequenceClassification") for a in architectures(config)
        )

    def check(self, config: dict, where: Path) -> None:
        id2label, number = config.get("id2label"), config.get("num_labels", 2)
        if isinstance(id2label, dict) and id2label:
            labels = len(id2label)
        elif isinstance(number, int) and not isinstance(number, bool):
            labels = number
        else:
            raise BadInput(f"{where / 'config.json'}: num_labels {number!r} is not a whole number")
        if labels != 1:
            raise BadInput(f"{where / 'config.json'}: the model has {labels} labels; a reranker has exactly 1")

    def token_limit(self, config: dict) -> int | None:
        positions = config.get("max_position_embeddings")
        return positions - self.position_offset if isinstance(positions, int) else None

    def scores(self, model_dir: Path, pairs: Sequence[Pair], max_tokens: int | None, device: str,
               dtype: str | None) -> list[float]:  # fmt: skip
        import torch
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(model_dir), device=device, max_length=max_tokens,
                             trust_remote_code=self.trust_remote_code)  # fmt: skip
        if dtype and dtype != "float32":
            model.model.to(getattr(torch, dtype))  # as Xinference does: load, then .half()
        return [float(score) for score in model.predict([(p.query, p.document) for p in pairs])]


def save(model: object, tokenizer: object, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
