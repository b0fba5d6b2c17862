"""A Haystack 2 ranker that reranks through an Xinference deployment.

    from haystack import Pipeline
    from xrerank.integrations.haystack import XrerankRanker
    pipeline.add_component("ranker", XrerankRanker(endpoint="http://127.0.0.1:9997", model_uid="bge-reranker",
                                                   top_k=5))
    pipeline.connect("retriever.documents", "ranker.documents")

The key is a Haystack Secret, from $XRERANK_API_KEY by default, so a serialised pipeline
(`to_dict`, YAML) names the variable and never holds the key. Each document comes back as a copy
with its `score` set to the reranker's, best first; documents with no text score lowest, as
Haystack's own rankers treat them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.utils import Secret, deserialize_secrets_inplace
except ImportError as exc:  # the integration's framework is an extra
    raise ImportError(f"{exc}; install it with: pip install 'xrerank[haystack]'") from exc

from xrerank.client import Reranker
from xrerank.defaults import API_KEY_ENV
from xrerank.integrations import client_for


@component
class XrerankRanker:
    def __init__(
        self,
        endpoint: str,
        model_uid: str,
        api_key: Secret | None = None,
        top_k: int | None = 10,
        timeout: float = 30.0,
        meta_fields_to_embed: list[str] | None = None,
        meta_data_separator: str = "\n",
    ) -> None:
        """`endpoint` is Xinference's REST API (http://host:9997); `top_k` None keeps every document,
        reordered; `meta_fields_to_embed` puts those metadata values before each text, as Haystack's
        rankers do."""
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0 or None, not {top_k}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout}")
        self.endpoint, self.model_uid = endpoint, model_uid
        self.api_key = api_key if api_key is not None else Secret.from_env_var(API_KEY_ENV, strict=False)
        self.top_k, self.timeout = top_k, timeout
        self.meta_fields_to_embed, self.meta_data_separator = list(meta_fields_to_embed or []), meta_data_separator
        self._client: Reranker | None = None

    def warm_up(self) -> None:
        if self._client is None:
            self._client = client_for(self.endpoint, self.model_uid, self.api_key.resolve_value(), self.timeout)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self, endpoint=self.endpoint, model_uid=self.model_uid, api_key=self.api_key.to_dict(), top_k=self.top_k,
            timeout=self.timeout, meta_fields_to_embed=self.meta_fields_to_embed,
            meta_data_separator=self.meta_data_separator,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XrerankRanker:
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    def _text(self, document: Document) -> str:
        meta = [str(document.meta[key]) for key in self.meta_fields_to_embed if document.meta.get(key) is not None]
        return self.meta_data_separator.join([*meta, document.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """`documents` reordered by relevance to `query`, each with its score, at most `top_k`."""
        top_k = self.top_k if top_k is None else top_k
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, not {top_k}")
        if not documents:
            return {"documents": []}
        self.warm_up()
        assert self._client is not None
        results = self._client.rerank(query, [self._text(document) for document in documents], top_n=top_k)
        return {"documents": [dataclasses.replace(documents[r.index], score=r.score) for r in results]}
