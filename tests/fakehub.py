"""A local stand-in for the ModelScope hub: the two endpoints the real `modelscope` client uses.

    GET /api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True   -> the listing
    GET /api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=P             -> the bytes (Range ok)

Point the client at it with MODELSCOPE_ENDPOINT=http://127.0.0.1:PORT (or endpoint=). Files can be
served corrupted (same size, other bytes) so that the client's sha256 check fails.
"""

from __future__ import annotations

import hashlib
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from loopback import LoopbackServer, QuietHandler

_COMMIT = "7d4a5b9c4cb3d25368a5ada209ca87aa1b881f52"
_NOT_FOUND = {"Code": 10010205001, "Data": None, "Message": "模型不存在", "RequestId": "0" * 32, "Success": False}


class FakeHub(LoopbackServer):
    def __init__(
        self, repos: dict[str, Path], corrupt: set[str] | None = None, cut_once: set[str] | None = None
    ) -> None:
        self.repos = {repo_id: Path(path) for repo_id, path in repos.items()}
        self.corrupt = set(corrupt or ())
        self.cut_once = set(cut_once or ())  # served halfway the first time, then the connection drops
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str | None]] = []  # (file, Range header) of every file request
        super().__init__(self._handler())

    def _files(self, repo_id: str) -> list[dict]:
        root = self.repos[repo_id]
        return [
            {
                "Name": path.name,
                "Path": str(path.relative_to(root)),
                "Type": "blob",
                "Size": path.stat().st_size,
                "Sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "Revision": _COMMIT,
                "Mode": "100644",
                "IsLFS": False,
                "CommitMessage": "init",
                "CommittedDate": 1700000000,
                "CommitterName": "fake-hub",
                "InCheck": False,
            }
            for path in sorted(root.rglob("*"))
            if path.is_file()
        ]

    def _body(self, repo_id: str, file_path: str) -> bytes | None:
        path = self.repos[repo_id] / file_path
        if not path.is_file():
            return None
        data = path.read_bytes()
        if file_path in self.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                hub.requests.append((url.path, query.get("FilePath", "")))
                parts = url.path.strip("/").split("/")
                if len(parts) < 5 or parts[:3] != ["api", "v1", "models"]:
                    return self.send_json(404, _NOT_FOUND)
                repo_id = f"{parts[3]}/{parts[4]}"
                if repo_id not in hub.repos or query.get("Revision", "master") not in ("master", _COMMIT):
                    return self.send_json(404, _NOT_FOUND)
                rest = parts[5:]
                if rest == ["repo", "files"]:
                    files = hub._files(repo_id)
                    return self.send_json(
                        200, {"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True}
                    )
                if rest == ["repo"] and "FilePath" in query:
                    data = hub._body(repo_id, query["FilePath"])
                    hub.ranges.append((query["FilePath"], self.headers.get("Range")))
                    cut = query["FilePath"] in hub.cut_once
                    hub.cut_once.discard(query["FilePath"])
                    return self.send_json(404, _NOT_FOUND) if data is None else self._bytes(data, cut)
                if not rest:
                    return self.send_json(200, {"Code": 200, "Data": {"Name": parts[4]}, "Success": True})
                return self.send_json(404, _NOT_FOUND)

            def _bytes(self, data: bytes, cut: bool = False) -> None:
                start = 0
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
                    start = int(ranged[6:].split("-")[0])
                if start >= len(data) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if cut:
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

        return Handler
