"""A steady load for the zero-downtime tests: callers sending requests back to back until stopped,
through xrerank's client with its default retries (as apps use it); every outcome counted."""

from __future__ import annotations

import threading

from xrerank.client import Reranker


class Load:
    def __init__(self, endpoint: str, uid: str, key: str | None = None, callers: int = 2) -> None:
        self.sent = self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._call, args=(endpoint, key, uid)) for _ in range(callers)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        return self

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, endpoint: str, key: str | None, uid: str) -> None:
        with Reranker(endpoint, uid, api_key=key) as client:
            while not self._stop.is_set():
                with self._lock:
                    self.sent += 1
                try:
                    client.rerank("What is AI?", ["AI is the study of machines.", "Apples are fruit."])
                except Exception as exc:  # noqa: BLE001 - every failure is counted, whatever its kind
                    with self._lock:
                        self.failures.append(str(exc))
                    continue
                with self._lock:
                    self.answered += 1
