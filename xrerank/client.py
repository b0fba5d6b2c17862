"""The rerank client: right argument order, a timeout on every call, retries while a replica loads.

    from xrerank.client import Reranker
    reranker = Reranker("http://127.0.0.1:9997", "bge-reranker", api_key="xf-...")
    for result in reranker.rerank("What is AI?", ["AI is ...", "Apples are ..."]):
        print(result.index, result.score, result.document)

With `cache=ScoreCache()` repeated (query, document) pairs are answered from memory; the
cache is keyed by the model's identity (its uid and the instance's launch time, read once, or
the `revision` given), so a relaunched model never serves another instance's scores.

Xinference's own client takes `rerank(documents, query)` and returns scores at
`results[i]["relevance_score"]`; guides that call `rerank(query, docs)` and read `res["score"]`
get a JSONDecodeError from the server's text/plain 500.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .cache import ScoreCache
from .errors import BadInput, ServerError, XrerankError
from .http import Api, ConnectionFailed, Credentials

# 503 "Model is loading" while a replica starts; 502/504 from proxies in front of the server.
_RETRIED_STATUSES = (502, 503, 504)
# A 500 naming a refused connection: the supervisor routed to a replica whose worker just died.
# It keeps such a replica in its rotation for ~20 s; the next request goes to another replica.
# "Remote server ... closed" (xoscar's ServerClosed): the worker died while the request was in
# flight. Scoring has no side effect, so sending it again is safe.
_DEAD_REPLICA = ("Connect call failed", "Connection refused", "[Errno 111]", "Remote server")


def _worth_retrying(error: ServerError) -> bool:
    return error.status in _RETRIED_STATUSES or (
        error.status == 500 and any(marker in str(error) for marker in _DEAD_REPLICA)
    )


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
        chunk_size: int = 256,
        parallel: int = 4,
        cache: ScoreCache | None = None,
        revision: str | None = None,
        connections: int = 10,
        keep_alive: bool | None = None,
    ) -> None:
        if chunk_size < 1 or parallel < 1:
            raise BadInput("chunk_size and parallel must be at least 1")
        self.model_uid = model_uid
        self.retry_for = retry_for
        self.chunk_size = chunk_size
        self.parallel = parallel
        self.cache = cache
        self.revision = revision
        self._api = Api(
            endpoint, credentials or Credentials(api_key=api_key), timeout, max(connections, parallel), keep_alive
        )

    def without_retries(self) -> Reranker:
        """A twin that reports the first failure instead of retrying it, for health checks."""
        api = self._api
        return Reranker(
            api.endpoint, self.model_uid, timeout=api.timeout, retry_for=0, credentials=api.credentials,
            chunk_size=self.chunk_size, parallel=self.parallel, cache=self.cache, revision=self.revision,
            keep_alive=api.keep_alive,
        )  # fmt: skip

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
        documents = list(documents)
        if self.cache is None:
            return self._score(query, documents, top_n)
        keys = self.cache.keys(self._model_identity(), query, documents)
        scores = self.cache.get_many(keys)
        unknown = [i for i, score in enumerate(scores) if score is None]
        if unknown:
            fresh = self._score(query, [documents[i] for i in unknown], None)
            for result in fresh:
                scores[unknown[result.index]] = result.score
            self.cache.put_many([keys[unknown[r.index]] for r in fresh], [r.score for r in fresh])
        return _ranked(
            [Result(i, score, doc) for i, (score, doc) in enumerate(zip(scores, documents, strict=True))], top_n
        )

    def _model_identity(self) -> str:
        if self.revision is None:
            found = self._api.get("/v1/models/instances", params={"model_uid": self.model_uid})
            if not found:
                raise RerankError(f"{self.model_uid} is not running on {self._api.endpoint}")
            self.revision = f"{found[0]['model_name']}@{found[0]['instance_created_ts']}"
        return f"{self._api.endpoint}\0{self.model_uid}\0{self.revision}"

    def _score(self, query: str, documents: list[str], top_n: int | None) -> list[Result]:
        starts = range(0, len(documents), self.chunk_size) if documents else [0]
        if len(starts) == 1:
            return self._rerank_chunk(query, documents, 0, top_n)
        # Long lists go out in chunks, several at once, so the replicas share them; every score
        # is computed pair by pair, so merging the chunks' rankings gives the single call's ranking.
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(starts))) as pool:
            chunks = pool.map(
                lambda start: self._rerank_chunk(query, documents[start : start + self.chunk_size], start, top_n),
                starts,
            )
            return _ranked([r for chunk in chunks for r in chunk], top_n)

    def _rerank_chunk(self, query: str, documents: list[str], offset: int, top_n: int | None) -> list[Result]:
        body = {"model": self.model_uid, "query": query, "documents": documents, "top_n": top_n}
        answer = self._post_with_retries(body)
        results = [
            Result(
                index=offset + item["index"], score=float(item["relevance_score"]), document=documents[item["index"]]
            )
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
                if not _worth_retrying(exc) or time.monotonic() + delay > deadline:
                    raise RerankError(f"rerank on {self.model_uid} failed: {exc}") from None
            except ConnectionFailed:
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def _ranked(results: list[Result], top_n: int | None) -> list[Result]:
    ranked = sorted(results, key=lambda r: (-r.score, r.index))
    return ranked if top_n is None else ranked[:top_n]
