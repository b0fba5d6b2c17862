"""The rerank client: right argument order, a timeout on every call, retries while a replica loads.

    from xrerank.client import Reranker
    reranker = Reranker("http://127.0.0.1:9997", "bge-reranker", api_key="xf-...")
    for result in reranker.rerank("What is AI?", ["AI is ...", "Apples are ..."]):
        print(result.index, result.score, result.document)

Xinference's own client takes `rerank(documents, query)` and returns scores at
`results[i]["relevance_score"]`; guides that call `rerank(query, docs)` and read `res["score"]`
get a JSONDecodeError from the server's text/plain 500.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BadInput, ServerError, XrerankError
from .http import Api, ConnectionFailed, Credentials

# 503 "Model is loading" while a replica starts; 502/504 from proxies in front of the server.
_RETRIED_STATUSES = (502, 503, 504)


class RerankError(XrerankError):
    """A rerank call failed; the message is the server's reason."""


@dataclass(frozen=True)
class Result:
    index: int
    score: float
    document: str


class Reranker:
    """Rerank through one deployed model, on one pooled HTTP session."""

    def __init__(
        self,
        endpoint: str,
        model_uid: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry_for: float = 30.0,
        credentials: Credentials | None = None,
    ) -> None:
        self.model_uid = model_uid
        self.retry_for = retry_for
        self._api = Api(endpoint, credentials or Credentials(api_key=api_key), timeout)

    def without_retries(self) -> Reranker:
        """A twin that reports the first failure instead of retrying it, for health checks."""
        api = self._api
        return Reranker(api.endpoint, self.model_uid, timeout=api.timeout, retry_for=0, credentials=api.credentials)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[Result]:
        """Documents ranked by relevance to `query`, best first; `index` points into `documents`."""
        if not isinstance(query, str) or not query.strip():
            raise BadInput("the query is empty")
        if isinstance(documents, str) or not all(isinstance(doc, str) for doc in documents):
            raise BadInput("documents must be a list of strings")
        if top_n is not None and top_n < 0:
            raise BadInput(f"top_n must be 0 or more, got {top_n}")
        body = {
            "model": self.model_uid,
            "query": query,
            "documents": list(documents),
            "top_n": top_n,
            "return_documents": False,
        }
        answer = self._post_with_retries(body)
        results = [
            Result(index=item["index"], score=float(item["relevance_score"]), document=documents[item["index"]])
            for item in answer.get("results", [])
        ]
        if any(not math.isfinite(result.score) for result in results):
            raise RerankError(f"{self.model_uid} returned a score that is not a finite number")
        return results

    def _post_with_retries(self, body: dict) -> dict:
        deadline = time.monotonic() + self.retry_for
        delay = 0.2
        while True:
            try:
                return self._api.post("/v1/rerank", json=body)
            except ServerError as exc:
                if exc.status not in _RETRIED_STATUSES or time.monotonic() + delay > deadline:
                    raise RerankError(f"rerank on {self.model_uid} failed: {exc}") from None
            except ConnectionFailed:
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
