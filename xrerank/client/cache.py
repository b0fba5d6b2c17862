"""A bounded cache of rerank scores, for the repeated queries that RAG front-ends send.

A cross-encoder scores each (query, document) pair on its own, so scores are cached per pair:
a request whose pairs are all known is answered without the server, and a partly known one
sends only the unknown documents. Keys are hashes of the model (endpoint, uid, revision), the
query and the document; the texts themselves are not kept.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    max_entries: int

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "hit_rate": round(self.hit_rate, 4)}


class ScoreCache:
    """Scores by (model, query, document), least recently used out first; safe across threads."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._scores: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._this_thread = threading.local()

    @staticmethod
    def keys(model: str, query: str, documents: Sequence[str]) -> list[bytes]:
        prefix = hashlib.blake2b(f"{model}\0{query}\0".encode(), digest_size=16)
        keys = []
        for document in documents:
            pair = prefix.copy()
            pair.update(document.encode())
            keys.append(pair.digest())
        return keys

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        with self._lock:
            found = [self._scores.get(key) for key in keys]
            for key, score in zip(keys, found, strict=True):
                if score is not None:
                    self._scores.move_to_end(key)
            hits = sum(score is not None for score in found)
            self._hits += hits
            self._misses += len(found) - hits
        self._this_thread.missed = len(found) - hits
        return found

    def last_lookup_missed(self) -> int:
        """How many pairs this thread's last lookup did not find (0: answered from the cache)."""
        return getattr(self._this_thread, "missed", 0)

    def put_many(self, keys: Sequence[bytes], scores: Sequence[float]) -> None:
        with self._lock:
            for key, score in zip(keys, scores, strict=True):
                self._scores[key] = score
                self._scores.move_to_end(key)
            while len(self._scores) > self.max_entries:
                self._scores.popitem(last=False)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._scores), self.max_entries)
