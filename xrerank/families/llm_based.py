"""LLM-based rerankers: BAAI/bge-reranker-v2-gemma, a Gemma decoder scored by FlagEmbedding.

Xinference 4.1 scores `type: LLM-based` with FlagEmbedding's FlagLLMReranker (the raw logit of
"Yes"), which its server needs installed: `pip install 'xrerank[llm-based]'` beside the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xrerank.errors import BadInput
from xrerank.families import Family, Pair, architectures, decoder_parameters, model_type


class LlmBased(Family):
    name = "llm-based"
    title = "LLM-based reranker (Gemma, FlagEmbedding)"
    examples = ("BAAI/bge-reranker-v2-gemma",)
    route = "FlagEmbedding's FlagLLMReranker (type: LLM-based)"
    xinference_type = "LLM-based"
    server_packages = ("FlagEmbedding",)
    server_extra = "llm-based"
    batch_pairs = 16

    def recognises(self, config: dict) -> bool:
        return model_type(config) in ("gemma", "gemma2") and any(
            a.endswith("ForCausalLM") for a in architectures(config)
        )

    def parameters(self, config: dict) -> int:
        return decoder_parameters(config)

    def scores(self, model_dir: Path, pairs: Sequence[Pair], max_tokens: int | None, device: str,
               dtype: str | None) -> list[float]:  # fmt: skip
        try:
            from FlagEmbedding import FlagLLMReranker
        except ImportError:
            raise BadInput(
                "the LLM-based reference needs FlagEmbedding on this machine: pip install 'xrerank[llm-based]'"
            ) from None
        model = FlagLLMReranker(str(model_dir), use_fp16=dtype == "float16", devices=device)
        scores = model.compute_score([[p.query, p.document] for p in pairs])
        return [float(s) for s in (scores if isinstance(scores, list) else [scores])]


FAMILY = LlmBased()
