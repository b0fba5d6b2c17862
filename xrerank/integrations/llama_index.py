"""A llama-index node postprocessor that reranks through an Xinference deployment.

    from xrerank.integrations.llama_index import XrerankRerank
    rerank = XrerankRerank(endpoint="http://127.0.0.1:9997", model_uid="bge-reranker", api_key="xf-...", top_n=5)
    query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])

Unlike llama-index-postprocessor-xinference-rerank 0.5.0, it sends the API key (an auth-on
Xinference answers that one 401), bounds every call, and retries a replica that is loading.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # the integration's framework is an extra
    raise ImportError(f"{exc}; install it with: pip install 'xrerank[llama-index]'") from exc

from xrerank.integrations import client_for


class XrerankRerank(BaseNodePostprocessor):
    endpoint: str = Field(description="Xinference's REST API, e.g. http://127.0.0.1:9997.")
    model_uid: str = Field(description="The deployed reranker's uid.")
    api_key: SecretStr | None = Field(default=None, description="An Xinference API key; default $XRERANK_API_KEY.")
    top_n: int = Field(default=5, ge=0, description="How many nodes to keep.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds for each HTTP answer.")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="What of a node is scored.")
    _client: Any = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        key = self.api_key.get_secret_value() if self.api_key else None
        self._client = client_for(self.endpoint, self.model_uid, key, self.timeout)

    @classmethod
    def class_name(cls) -> str:
        return "XrerankRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("XrerankRerank needs the query: call postprocess_nodes(nodes, query_str=...)")
        if not nodes:
            return []
        texts = [node.node.get_content(metadata_mode=self.metadata_mode) for node in nodes]
        results = self._client.rerank(query_bundle.query_str, texts, top_n=self.top_n)
        return [NodeWithScore(node=nodes[result.index].node, score=result.score) for result in results]
