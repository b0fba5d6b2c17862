"""Load a deployed reranker the way a RAG front-end does, and measure what it answers.

Closed loop: `concurrency` callers each send a request, wait for its answer and send the next,
until the duration or the request count runs out. Requests are never retried, so every failure
is counted; latencies are those of the answered requests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from xrerank.client.cache import CacheStats, ScoreCache
from xrerank.errors import require_server_side

if TYPE_CHECKING:
    from xrerank.xinference.session import Session

# Common English words: about one token each for XLM-RoBERTa's and BERT's vocabularies.
WORDS = (
    "the model ranks each passage by how well it answers the query retrieval systems first recall many "
    "candidates with a vector index then a cross encoder reads query and passage together and scores "
    "their relevance apple fruit company phone capital city river mountain history science energy "
    "market price water health school music travel weather sport language computer network data"
).split()


@dataclass(frozen=True)
class Workload:
    """What the callers send. `queries` > 0 draws each query from that many distinct ones."""

    docs: int = 16
    doc_tokens: int = 64
    concurrency: int = 4
    duration: float = 10.0
    max_requests: int = 100_000
    queries: int = 0
    seed: int = 0
    warmup: float = 0.0  # seconds of load before measuring; requests started in it are not counted

    def documents(self, request: int) -> list[str]:
        rng = random.Random(f"{self.seed}-docs-{request % 8}")
        return [" ".join(rng.choice(WORDS) for _ in range(self.doc_tokens)) for _ in range(self.docs)]

    def query(self, request: int, rng: random.Random) -> tuple[str, int]:
        """The query text and the document set it goes with (repeated queries bring the same set)."""
        topic = rng.randrange(self.queries) if self.queries else request
        words = random.Random(f"{self.seed}-query-{topic}")
        return "which passage explains " + " ".join(words.choice(WORDS) for _ in range(8)) + f" {topic}", topic


@dataclass
class BenchResult:
    workload: Workload
    elapsed: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    cache_hit_latencies: list[float] = field(default_factory=list)
    cache: CacheStats | None = None
    sent: int = 0  # every request started, the warm-up's included

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def requests_per_second(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    @property
    def pairs_per_second(self) -> float:
        return self.requests_per_second * self.workload.docs

    def percentile(self, fraction: float, latencies: list[float] | None = None) -> float | None:
        """Nearest-rank percentile of the answered requests' latencies, in seconds."""
        ordered = sorted(self.latencies if latencies is None else latencies)
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered) - 1e-9) - 1))]

    def as_dict(self) -> dict:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        document = {
            "workload": self.workload.__dict__,
            "elapsed_s": round(self.elapsed, 3),
            "requests": self.answered + sum(self.errors.values()),
            "sent_with_warmup": self.sent,
            "answered": self.answered,
            "errors": sum(self.errors.values()),
            "error_reasons": dict(self.errors.most_common(5)),
            "latency_ms": {name: ms(self.percentile(q)) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
            "requests_per_s": round(self.requests_per_second, 2),
            "pairs_per_s": round(self.pairs_per_second, 1),
        }
        if self.cache is not None:
            document["cache"] = {
                **self.cache.as_dict(),
                "answered_from_cache": len(self.cache_hit_latencies),
                "hit_p50_ms": ms(self.percentile(0.5, self.cache_hit_latencies)),
            }
        return document


REFUSALS = (401, 403, 429)  # the key refused, or this address banned
Send = Callable[[str, list[str]], object]  # rerank(query, documents), raising on any failure


class BenchFailure(Exception):
    """One request of the bench's own sender failed; `status` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DirectSender:
    """What bench sends with when nothing needs the client (no cache, plain http, an API key).

    The client and the server share the machine bench runs on, so every microsecond of the
    loader's CPU comes out of the server's share. This one does no more per request than a
    minimal loader does: each document list is encoded once, the request is a byte string put
    together around the query, http.client sends it on a fresh connection (Xinference 4.1 leaves
    Nagle's algorithm on, so a kept-alive one waits ~40 ms per request), and the answer is
    checked for its status and for one result per document without decoding it."""

    def __init__(self, endpoint: str, model_uid: str, api_key: str | None, timeout: float,
                 source_address: str | None = None) -> None:  # fmt: skip
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.path = f"{parts.path.rstrip('/')}/v1/rerank"
        self.headers = {"Content-Type": "application/json", "Connection": "close"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.source = (source_address, 0) if source_address else None
        self.model = json.dumps(model_uid).encode()
        self.encoded: dict[int, tuple[list[str], bytes]] = {}

    def __call__(self, query: str, documents: list[str]) -> None:
        held = self.encoded.get(id(documents))
        if held is None or held[0] is not documents:  # keyed by identity: the prepared lists live on
            held = self.encoded[id(documents)] = (documents, json.dumps(documents).encode())
        body = b'{"model":%s,"query":%s,"documents":%s}' % (self.model, json.dumps(query).encode(), held[1])
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                                source_address=self.source)  # fmt: skip
        try:
            connection.request("POST", self.path, body, self.headers)
            response = connection.getresponse()
            content = response.read()
        except TimeoutError:
            raise BenchFailure(f"no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise BenchFailure(f"connection failed: {type(exc).__name__}") from None
        finally:
            connection.close()
        if response.status != 200:
            reason = content[:300].decode("utf-8", "replace").replace("\n", " ")
            raise BenchFailure(f"HTTP {response.status}: {reason}", response.status)
        answered = content.count(b'"relevance_score"')
        if answered != len(documents):
            raise BenchFailure(f"answered {answered} of {len(documents)} documents")


def run_bench(
    rerank: Callable[[str, list[str]], object],
    workload: Workload,
    on_progress: Callable[[BenchResult], None] | None = None,
    cache: ScoreCache | None = None,
) -> BenchResult:
    """Drive `rerank(query, documents)` with the workload and return what was measured.

    The callers start together and load the model for `warmup` seconds first; only requests
    that start after the warm-up count, and the elapsed time starts there too. A caller still
    busy with a warm-up request when the window closes makes one counted request after it, and
    the window is stretched to that request's end: a request slower than the window is measured
    as such rather than as no answer at all. Requests are built before the clock starts. With
    the client's `cache`, a request that found all its pairs there counts as answered and its
    latency also lands in `cache_hit_latencies`.
    """
    result = BenchResult(workload, 0.0)
    lock = threading.Lock()
    requests = _prepared(workload)
    fresh_queries = not workload.queries
    counter = iter(range(workload.max_requests + 10**9))
    begun = time.perf_counter()
    measuring_from = begun + workload.warmup
    deadline = measuring_from + workload.duration
    measured = iter(range(workload.max_requests))
    overtime_ends: list[float] = []  # when the requests started past the deadline ended
    refused = threading.Event()  # the credential was refused: every further request would be too

    def caller(number: int) -> None:
        latencies, errors, hits = result.latencies, result.errors, result.cache_hit_latencies
        measured_one = False
        while not refused.is_set():
            begin = time.perf_counter()
            overtime = begin >= deadline
            if overtime and measured_one:
                return
            counted = begin >= measuring_from
            measured_one = measured_one or counted
            if counted and next(measured, None) is None:  # a range iterator's next() is atomic under the GIL
                return
            number = next(counter)
            query, documents = requests[number % len(requests)]
            if fresh_queries:  # every request a query never seen before, as with no --queries
                query = f"{query} #{number}"
            try:
                rerank(query, documents)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, by its reason
                # A refused key is refused for every caller, and each refusal counts towards a ban of
                # this address: stop at the first one.
                stop = getattr(exc, "status", None) in REFUSALS
                if counted or stop:
                    with lock:
                        errors[str(exc).splitlines()[0][:200] or type(exc).__name__] += 1
                if stop:
                    refused.set()
                continue
            finally:
                if overtime:
                    overtime_ends.append(time.perf_counter())
            if counted:
                latency = time.perf_counter() - begin
                latencies.append(latency)  # list.append is atomic under the GIL
                if cache is not None and not cache.last_lookup_missed():
                    hits.append(latency)

    def report() -> None:
        while not finished.wait(1.0):
            result.elapsed = max(0.0, time.perf_counter() - measuring_from)
            on_progress(result)

    finished = threading.Event()
    watcher = threading.Thread(target=report, daemon=True) if on_progress else None
    if watcher:
        watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=workload.concurrency) as pool:
            list(pool.map(caller, range(workload.concurrency)))
    finally:
        finished.set()
    result.elapsed = max(1e-9, max([min(time.perf_counter(), deadline), *overtime_ends]) - measuring_from)
    result.sent = next(counter)  # the count of numbers handed out: every request started
    result.cache = cache.stats() if cache is not None else None
    return result


def _prepared(workload: Workload) -> list[tuple[str, list[str]]]:
    """Every (query, documents) the callers send, built once: generating text is not the server's time."""
    rng = random.Random(f"{workload.seed}-queries")
    count = workload.queries or 64
    documents = {topic: workload.documents(topic) for topic in range(min(count, 8))}
    prepared = []
    for request in range(count):
        query, topic = workload.query(request, rng)
        prepared.append((query, documents.get(topic % 8) or workload.documents(topic)))
    return prepared


@dataclass(frozen=True)
class InProcess:
    """CrossEncoder.predict on this machine, the ceiling a served model is compared with."""

    device: str  # "cpu (N threads)" or "cuda: <the GPU's name>"
    dtype: str
    pairs_per_second: dict[int, float]  # by the predict batch size

    def as_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "pairs_per_s": {str(k): round(v, 1) for k, v in
                                                                            self.pairs_per_second.items()}}  # fmt: skip

    def ratio(self, served_pairs_per_second: float) -> float | None:
        """Served over the best batch size's rate here; None when nothing was measured."""
        best = max(self.pairs_per_second.values(), default=0.0)
        return served_pairs_per_second / best if best else None

    def rates(self) -> str:
        return ", ".join(f"batch {batch}: {rate:.0f}" for batch, rate in self.pairs_per_second.items())


def in_process_limit(
    model_dir: Path, max_tokens: int | None, dtype: str, workload: Workload, batch_sizes: tuple[int, ...] = (32, 128),
    seconds: float = 4.0,
) -> InProcess:  # fmt: skip
    """The same documents scored in process: on the GPU in the deployment's dtype when there is one
    (loaded in fp32, then cast, as Xinference does), else on the CPU in fp32."""
    import torch
    from sentence_transformers import CrossEncoder

    cuda = torch.cuda.is_available()
    model = CrossEncoder(str(model_dir), device="cuda" if cuda else "cpu", max_length=max_tokens)
    if cuda and dtype != "float32":
        model.model.to(getattr(torch, dtype))
    pairs = [(query, document) for query, documents in _prepared(workload)[:16] for document in documents]
    model.predict(pairs[:8], batch_size=8)  # warm up: kernels, allocator
    rates = {}
    for batch in batch_sizes:
        scored, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds:
            model.predict(pairs, batch_size=batch)
            scored += len(pairs)
        rates[batch] = scored / (time.perf_counter() - begin)
    device = f"cuda: {torch.cuda.get_device_name(0)}" if cuda else f"cpu ({torch.get_num_threads()} threads)"
    return InProcess(device, dtype if cuda else "float32", rates)


def bench_model(
    session: Session,
    model_uid: str | None,
    workload: Workload,
    cache_size: int = 0,
    keep_alive: bool | None = None,
    on_progress: Callable[[BenchResult], None] | None = None,
    compare_in_process: bool = False,
    sweep: tuple[int, ...] = (),
) -> BenchReport:
    """`xrerank bench`: load `model_uid` (or the only rerank model) through the data-plane credential;
    with `sweep`, once per number of callers in it, one after the other; with `compare_in_process`,
    measure the same documents in process too (when the weights are here)."""
    from xrerank.xinference.serving import rerank_target

    if compare_in_process:
        require_server_side("bench --in-process")
    uid = rerank_target(session.server, model_uid)[0]
    weights = _weights_here(session, uid) if compare_in_process else None  # refused before any load is sent
    levels = sweep or (workload.concurrency,)
    results = []
    for callers in levels:
        level = replace(workload, concurrency=callers)
        results.append(_load(session, uid, level, cache_size, keep_alive, on_progress))
    limit = in_process_limit(*weights, workload) if weights else None
    return BenchReport(session.endpoint, uid, results[-1], limit, results if sweep else [])


def _load(session: Session, uid: str, workload: Workload, cache_size: int, keep_alive: bool | None,
          on_progress: Callable[[BenchResult], None] | None) -> BenchResult:  # fmt: skip
    cache = ScoreCache(cache_size) if cache_size else None
    with sender(session, uid, workload, cache=cache, keep_alive=keep_alive) as send:
        return run_bench(send, workload, on_progress, cache)


@contextlib.contextmanager
def sender(session: Session, uid: str, workload: Workload, cache: ScoreCache | None = None,
           keep_alive: bool | None = None, chunk_size: int | None = None) -> Iterator[Send]:  # fmt: skip
    """What the load goes out with: the bench's own lean sender where nothing needs the client (no
    cache, no chunking, plain http, an API key), else the client, never retrying."""
    from xrerank.xinference.serving import open_client

    credentials = session.data_credentials()
    plain = session.endpoint.startswith("http://") and not keep_alive and not credentials.username
    if cache is None and chunk_size is None and plain:
        yield DirectSender(session.endpoint, uid, credentials.api_key, session.timeout, session.source_address)
        return
    options: dict = {"retry_for": 0, "cache": cache, "connections": workload.concurrency, "keep_alive": keep_alive}
    if chunk_size:
        options |= {"chunk_size": chunk_size, "parallel": max(4, -(-workload.docs // chunk_size))}
    with open_client(session, uid, **options) as client:
        yield client.rerank


def _weights_here(session: Session, uid: str) -> tuple[Path, int | None, str]:
    """The served model's directory, max tokens and dtype, for scoring it in process on this machine."""
    from xrerank.deploy.engine import served_dtype
    from xrerank.errors import XrerankError

    server = session.server
    instance = server.instance(uid)
    registration = server.registration(instance.model_name) if instance else None
    uri = registration.model_uri if registration else None
    if instance is None or uri is None or not (Path(uri) / "config.json").is_file():
        raise XrerankError(f"the weights of {uid} are not readable on this machine: no in-process comparison")
    return Path(uri), registration.max_tokens, served_dtype(session, instance)


@dataclass
class BenchReport:
    endpoint: str
    model_uid: str
    result: BenchResult  # the (last) level's
    in_process: InProcess | None = None
    sweep: list[BenchResult] = field(default_factory=list)  # every level's, with --sweep

    @property
    def errors(self) -> int:
        return sum(sum(result.errors.values()) for result in self.sweep or [self.result])

    def as_dict(self) -> dict:
        document = {"endpoint": self.endpoint, "model_uid": self.model_uid, **self.result.as_dict()}
        if self.sweep:
            document["sweep"] = [result.as_dict() for result in self.sweep]
        if self.in_process is not None:
            ratio = self.in_process.ratio(self.result.pairs_per_second)
            document["in_process"] = {
                **self.in_process.as_dict(),
                "served_vs_best": None if ratio is None else round(ratio, 3),
            }
        return document
