"""A LangChain document compressor that reranks through an Xinference deployment, sync and async.

    from xrerank.integrations.langchain import XrerankRerank
    compressor = XrerankRerank(endpoint="http://127.0.0.1:9997", model_uid="bge-reranker", api_key="xf-...", top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)

Each kept document carries its score in metadata["relevance_score"]. It needs only
langchain-core (langchain-xinference pins xinference-client < 2 and langchain-core < 0.4), and its
async path works whether or not it was built inside an event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from pydantic import ConfigDict, Field, PrivateAttr, SecretStr
except ImportError as exc:  # the integration's framework is an extra
    raise ImportError(f"{exc}; install it with: pip install 'xrerank[langchain]'") from exc

from xrerank.integrations import client_for


class XrerankRerank(BaseDocumentCompressor):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    endpoint: str = Field(description="Xinference's REST API, e.g. http://127.0.0.1:9997.")
    model_uid: str = Field(description="The deployed reranker's uid.")
    api_key: SecretStr | None = Field(default=None, description="An Xinference API key; default $XRERANK_API_KEY.")
    top_n: int | None = Field(default=3, ge=0, description="How many documents to keep (None: all, reordered).")
    timeout: float = Field(default=30.0, gt=0, description="Seconds for each HTTP answer.")
    _client: Any = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        key = self.api_key.get_secret_value() if self.api_key else None
        self._client = client_for(self.endpoint, self.model_uid, key, self.timeout)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        results = self._client.rerank(query, [document.page_content for document in documents], top_n=self.top_n)
        ranked = []
        for result in results:
            original = documents[result.index]
            metadata = {**original.metadata, "relevance_score": result.score}
            ranked.append(Document(page_content=original.page_content, metadata=metadata, id=original.id))
        return ranked

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
