"""A small HTTP proxy in front of a real Xinference that misbehaves on purpose.

Every request goes through to the server as it came (credentials included); /v1/rerank answers
are then rewritten by the current `fault`, so `xrerank verify` can be shown failing, check by
check, against a service that is real in every other respect.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from loopback import LoopbackServer, QuietHandler

FAULTS = (
    "none",
    "unsorted",  # results in the wrong order
    "index-off-by-one",  # every index one too high
    "score-above-one",  # the best score pushed past 1
    "nan",  # a score that is not a number
    "top-n-ignored",  # top_n dropped on the way to the server
    "empty-list-error",  # an empty document list answered with a 500
    "long-document-error",  # a long document answered with a 500
    "every-other-from",  # every other rerank answered by another model (set `other_uid`)
    "inverted",  # 1 - score: the ranking turned upside down
    "fail-first",  # the next `failures` reranks answered with `failure_status` (a proxy or a loading replica)
)


class MisbehavingProxy(LoopbackServer):
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fault = "none"
        self.other_uid: str | None = None
        self.failures, self.failure_status = 0, 503
        self.reranks = 0
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def _forward(self, method: str, path: str, headers: dict, body: bytes | None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def _rerank(self, headers: dict, body: bytes) -> tuple[int, bytes]:
        request = json.loads(body)
        with self._lock:
            self.reranks += 1
            number = self.reranks
        fault = self.fault
        if fault == "fail-first":
            with self._lock:
                failing, self.failures = self.failures > 0, max(0, self.failures - 1)
            if failing:
                return self.failure_status, b'{"detail": "upstream not ready"}'
        if fault == "empty-list-error" and not request.get("documents"):
            return 500, b'{"detail": "no documents"}'
        if fault == "long-document-error" and any(len(doc) > 2000 for doc in request.get("documents", [])):
            return 500, b'{"detail": "document too long"}'
        if fault == "top-n-ignored":
            request["top_n"] = None
        if fault == "every-other-from" and number % 2 == 0:
            request["model"] = self.other_uid
        status, _, answer = self._forward("POST", "/v1/rerank", headers, json.dumps(request).encode())
        if status != 200:
            return status, answer
        document = json.loads(answer)
        results = document.get("results", [])
        if fault == "unsorted":
            results.reverse()
        elif fault == "index-off-by-one":
            for item in results:
                item["index"] += 1
        elif fault == "score-above-one" and results:
            results[0]["relevance_score"] += 1.5
        elif fault == "nan" and results:
            results[-1]["relevance_score"] = float("nan")
        elif fault == "inverted":
            for item in results:
                item["relevance_score"] = 1.0 - item["relevance_score"]
            results.sort(key=lambda item: -item["relevance_score"])
        return 200, json.dumps(document).encode()  # allow_nan: a NaN goes out as the literal NaN

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                dropped = ("host", "connection", "content-length")  # the body may be rewritten: http.client sets it
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                headers["Connection"] = "close"
                if self.command == "POST" and self.path.startswith("/v1/rerank"):
                    status, answer = proxy._rerank(headers, body or b"{}")
                    content_type = "application/json"
                else:
                    status, response_headers, answer = proxy._forward(self.command, self.path, headers, body)
                    content_type = response_headers.get("content-type", "application/json")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer)
                self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PUT = _relay

        return Handler
