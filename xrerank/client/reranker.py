"""The rerank client: right argument order, one deadline per call, retries while a replica loads.

    from xrerank.client import Reranker
    reranker = Reranker("http://127.0.0.1:9997", "bge-reranker", api_key="xf-...")
    for result in reranker.rerank("What is AI?", ["AI is ...", "Apples are ..."]):
        print(result.index, result.score, result.document)

Every failure is a `RerankError` (its `exit_code` tells the kind: 2 bad input, 3 unreachable
or refused, 4 timed out, 1 the server's refusal), with the server's reason.

With `cache=ScoreCache()` repeated (query, document) pairs are answered from memory; the
cache is keyed by the model's identity (its uid and the instance's launch time, read once, or
the `revision` given), so a relaunched model never serves another instance's scores.

Xinference's own client takes `rerank(documents, query)` and returns scores at
`results[i]["relevance_score"]`; guides that call `rerank(query, docs)` and read `res["score"]`
get a JSONDecodeError from the server's text/plain 500.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from xrerank.client.cache import ScoreCache
from xrerank.client.http import Api, ConnectionFailed, Credentials, Refused, check_api_key
from xrerank.defaults import API_KEY_ENV
from xrerank.errors import WORKER_GONE, ExitCode, ServerError, XrerankError

# 503 "Model is loading" while a replica starts; 502/504 from proxies in front of the server.
_RETRIED_STATUSES = (502, 503, 504)
# A 500 naming a refused connection: the supervisor routed to a replica whose worker just died.
# It keeps such a replica in its rotation for ~20 s; the next request goes to another replica.
# "Remote server ... closed" (xoscar's ServerClosed): the worker died while the request was in
# flight. Scoring has no side effect, so sending it again is safe.
# "is in stopping state" and xoscar's "Error when sending message": a replica being removed (scale
# down, heal, roll), which Xinference keeps routing to until it is gone, ~0.5 s. Again the next
# request goes elsewhere.
_DEAD_REPLICA = (
    *WORKER_GONE,
    "Remote server",
    "stopping state",
    "Error when sending message",
)


def _worth_retrying(error: XrerankError) -> bool:
    if isinstance(error, ConnectionFailed):
        return True
    if not isinstance(error, ServerError):
        return False
    return error.status in _RETRIED_STATUSES or (
        error.status == 500 and any(marker in str(error) for marker in _DEAD_REPLICA)
    )


class RerankError(XrerankError):
    """A rerank call failed. `exit_code` says how (as the CLI's), `status` is the HTTP status if any."""

    def __init__(self, message: str, exit_code: int = ExitCode.FAILED, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = ExitCode(exit_code)
        self.status = status

    @classmethod
    def wrapping(cls, error: XrerankError, prefix: str = "") -> RerankError:
        return cls(f"{prefix}{error}", error.exit_code, getattr(error, "status", None))


@dataclass(frozen=True)
class Result:
    index: int
    score: float
    document: str


class Reranker:
    """Rerank through one deployed model, on one pooled HTTP session.

    Give `api_key=` (an Xinference API key, "xf-..."); without one, $XRERANK_API_KEY is used if set.
    For the embedded server that `xrerank up` started, `xrerank.xinference.local.embedded_api_key`
    reads its own key."""

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
        source_address: str | None = None,
    ) -> None:
        if not isinstance(chunk_size, int) or not isinstance(parallel, int) or chunk_size < 1 or parallel < 1:
            raise RerankError("chunk_size and parallel must be whole numbers of at least 1", ExitCode.BAD_INPUT)
        timeout = _seconds(timeout, "timeout", zero_ok=False)
        if not isinstance(model_uid, str) or not model_uid.strip():
            raise RerankError(f"model_uid must be a model's uid, got {model_uid!r}", ExitCode.BAD_INPUT)
        self.model_uid = model_uid
        self.retry_for = _seconds(retry_for, "retry_for", zero_ok=True)
        self.chunk_size = chunk_size
        self.parallel = parallel
        self.cache = cache
        self.revision = revision
        try:
            source = "api_key"
            if api_key is None and os.environ.get(API_KEY_ENV):
                api_key, source = os.environ[API_KEY_ENV], f"${API_KEY_ENV}"
            if api_key is not None:
                check_api_key(api_key, source)
            credentials = credentials or Credentials(api_key=api_key)
            self._api = Api(endpoint, credentials, timeout, max(connections, parallel), keep_alive, source_address)
        except XrerankError as exc:
            raise RerankError.wrapping(exc) from None

    def without_retries(self) -> Reranker:
        """A twin that reports the first failure instead of retrying it, for health checks."""
        api = self._api
        return Reranker(
            api.endpoint, self.model_uid, timeout=api.timeout, retry_for=0, credentials=api.credentials,
            chunk_size=self.chunk_size, parallel=self.parallel, cache=self.cache, revision=self.revision,
            keep_alive=api.keep_alive, source_address=api.source_address,
        )  # fmt: skip

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def rerank(self, query: str, documents: Iterable[str], top_n: int | None = None) -> list[Result]:
        """Documents ranked by relevance to `query`, best first; `index` points into `documents`."""
        documents = _documents(documents)
        _check_query(query)
        _check_top_n(top_n)
        deadline = time.monotonic() + self.retry_for
        try:
            if self.cache is None:
                return self._score(query, documents, top_n, deadline)
            return self._score_with_cache(query, documents, top_n, deadline)
        except RerankError:
            raise
        except XrerankError as exc:
            raise RerankError.wrapping(exc, f"rerank on {self.model_uid} failed: ") from None

    def answer(
        self, query: str, documents: Iterable[str], top_n: int | None = None, return_documents: bool = False
    ) -> dict:
        """One request, and the server's answer as it sent it (no chunking, no cache, no checks)."""
        documents = _documents(documents)
        _check_query(query)
        _check_top_n(top_n)
        body = {"model": self.model_uid, "query": query, "documents": documents, "top_n": top_n}
        if return_documents:
            body["return_documents"] = True
        try:
            return self._post(body, time.monotonic() + self.retry_for)
        except XrerankError as exc:
            raise RerankError.wrapping(exc, f"rerank on {self.model_uid} failed: ") from None

    def _score_with_cache(self, query: str, documents: list[str], top_n: int | None, deadline: float) -> list[Result]:
        assert self.cache is not None
        keys = self.cache.keys(self._model_identity(), query, documents)
        scores = self.cache.get_many(keys)
        unknown = [i for i, score in enumerate(scores) if score is None]
        if unknown:
            fresh = self._score(query, [documents[i] for i in unknown], None, deadline)
            for result in fresh:
                scores[unknown[result.index]] = result.score
            self.cache.put_many([keys[unknown[r.index]] for r in fresh], [r.score for r in fresh])
        return _ranked(
            [Result(i, score, doc) for i, (score, doc) in enumerate(zip(scores, documents, strict=True))], top_n
        )

    def _model_identity(self) -> str:
        if self.revision is None:
            # The instance's record tells a relaunch (a new created_ts) from the model the cache scored.
            found = self._api.get("/v1/models/instances", params={"model_uid": self.model_uid})
            if not found:
                raise RerankError(f"{self.model_uid} is not running on {self._api.endpoint}")
            self.revision = f"{found[0].get('model_name')}@{found[0].get('created_ts')}"
        return f"{self._api.endpoint}\0{self.model_uid}\0{self.revision}"

    def _score(self, query: str, documents: list[str], top_n: int | None, deadline: float) -> list[Result]:
        starts = range(0, len(documents), self.chunk_size) if documents else [0]
        if len(starts) == 1:
            return self._rerank_chunk(query, documents, 0, top_n, deadline)
        # Long lists go out in chunks, several at once, so the replicas share them; every score
        # is computed pair by pair, so merging the chunks' rankings gives the single call's ranking.
        # One deadline bounds them all, and the first chunk that fails stops the others.
        failed = threading.Event()

        def chunk(start: int) -> list[Result]:
            if failed.is_set():
                return []
            try:
                return self._rerank_chunk(query, documents[start : start + self.chunk_size], start, top_n, deadline)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=min(self.parallel, len(starts))) as pool:
            futures = [pool.submit(chunk, start) for start in starts]
            return _ranked([r for future in futures for r in future.result()], top_n)

    def _rerank_chunk(
        self, query: str, documents: list[str], offset: int, top_n: int | None, deadline: float
    ) -> list[Result]:
        answer = self._post({"model": self.model_uid, "query": query, "documents": documents, "top_n": top_n}, deadline)
        results = []
        for item in answer.get("results", []) if isinstance(answer, dict) else ():
            index, score = item.get("index"), item.get("relevance_score")
            if not isinstance(index, int) or not 0 <= index < len(documents):
                raise RerankError(f"{self.model_uid} answered index {index!r} for {len(documents)} documents")
            if not isinstance(score, (int, float)) or not math.isfinite(score):
                raise RerankError(f"{self.model_uid} returned a score that is not a finite number: {score!r}")
            results.append(Result(offset + index, float(score), documents[index]))
        return results

    def _post(self, body: dict, deadline: float) -> dict:
        delay = 0.2
        while True:
            try:
                return self._api.post("/v1/rerank", json=body)
            except Refused as exc:
                raise RerankError(
                    f"{exc}"
                    if self._api.credentials
                    else f"{exc.args[0].split(';')[0]}; pass api_key= (an "
                    "Xinference API key, e.g. from `xrerank connect`) to Reranker",
                    exc.exit_code,
                    getattr(exc, "status", None),
                ) from None
            except XrerankError as exc:
                if not _worth_retrying(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def _documents(documents: Iterable[str]) -> list[str]:
    # A mapping iterates over its keys, which would be ranked in place of its values.
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Iterable):
        raise RerankError(f"documents must be a list of strings, got {type(documents).__name__}", ExitCode.BAD_INPUT)
    documents = list(documents)  # a generator is read once, here
    for position, document in enumerate(documents):
        if not isinstance(document, str):
            raise RerankError(
                f"documents must be strings; document {position} is {type(document).__name__}: {str(document)[:40]!r}",
                ExitCode.BAD_INPUT,
            )
        _check_length(document, f"document {position}")
        _check_encodable(document, f"document {position}")
    return documents


# A reranker reads at most its max_tokens (8192 for bge-reranker-v2-m3, ~40 KB of text) of a pair;
# the server still tokenizes all of it first, and a 50 MB document held a replica at 13 GB.
MAX_TEXT_CHARS = 1_000_000


def _check_length(text: str, what: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise RerankError(
            f"{what} is {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are sent, and the model reads only "
            "its first few thousand tokens: cut it (text[:100_000] keeps more than any reranker reads)",
            ExitCode.BAD_INPUT,
        )


def _check_encodable(text: str, what: str) -> None:
    """A lone surrogate (from a broken decode) cannot be sent as UTF-8; the server would answer 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RerankError(
            f"{what} holds a character that is not valid Unicode ({text[exc.start]!r} at {exc.start}): "
            "decode the text with errors='replace' first",
            ExitCode.BAD_INPUT,
        ) from None


def _check_query(query: object) -> None:
    if not isinstance(query, str):
        raise RerankError(f"the query must be a string, got {type(query).__name__}", ExitCode.BAD_INPUT)
    if not query.strip():
        raise RerankError("the query is empty", ExitCode.BAD_INPUT)
    _check_length(query, "the query")
    _check_encodable(query, "the query")


def _seconds(value: object, what: str, zero_ok: bool) -> float:
    """A number of seconds: finite, positive (or zero where `zero_ok`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RerankError(f"{what} must be a number of seconds, got {value!r}", ExitCode.BAD_INPUT)
    if value < 0 or (value == 0 and not zero_ok):
        least = "0 or more" if zero_ok else "more than 0"
        raise RerankError(f"{what} must be {least} seconds, got {value!r}", ExitCode.BAD_INPUT)
    if value > MAX_SECONDS:  # the socket layer overflows on absurd values
        raise RerankError(f"{what} must be at most {MAX_SECONDS} seconds (a day), got {value!r}", ExitCode.BAD_INPUT)
    return float(value)


MAX_SECONDS = 86_400


def _check_top_n(top_n: object) -> None:
    if top_n is None:
        return
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise RerankError(f"top_n must be a whole number of 0 or more, got {top_n!r}", ExitCode.BAD_INPUT)


def _ranked(results: list[Result], top_n: int | None) -> list[Result]:
    ranked = sorted(results, key=lambda r: (-r.score, r.index))
    return ranked if top_n is None else ranked[:top_n]
