"""A local stand-in for the Hugging Face Hub: the routes `huggingface_hub` 1.16 uses to download.

    GET  /api/models/{owner}/{name}[/revision/{rev}][?blobs=true]  -> id, sha, siblings (with hashes)
    HEAD /{owner}/{name}/resolve/{rev}/{path}                       -> X-Repo-Commit, ETag, sizes
    GET  /{owner}/{name}/resolve/{rev}/{path}                       -> the bytes (Range ok)

Errors carry the X-Error-Code header the client maps to its exceptions (RepoNotFound,
RevisionNotFound, EntryNotFound). No X-Xet-* header is ever sent, so the client stays on plain
HTTP. Files can be served corrupted (same size, other bytes: the client itself only checks
sizes) or cut off halfway the first time they are asked for.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from loopback import LoopbackServer, QuietHandler

COMMIT = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
LFS_SUFFIXES = (".safetensors", ".bin")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHFHub(LoopbackServer):
    def __init__(
        self, repos: dict[str, Path], corrupt: set[str] | None = None, cut_once: set[str] | None = None
    ) -> None:
        self.repos = {repo_id: Path(path) for repo_id, path in repos.items()}
        self.corrupt = set(corrupt or ())
        self.cut_once = set(cut_once or ())
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def downloaded(self) -> list[str]:
        """The files whose bytes were asked for, in order."""
        return [path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in self.requests
                if method == "GET" and "/resolve/" in path]  # fmt: skip

    def _files(self, repo_id: str) -> list[str]:
        root = self.repos[repo_id]
        return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()]

    def _sibling(self, repo_id: str, name: str, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": name}
        data = (self.repos[repo_id] / name).read_bytes()
        entry = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return entry

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
                self._route(head=True)

            def do_GET(self) -> None:  # noqa: N802
                self._route(head=False)

            def _route(self, head: bool) -> None:
                url = urlparse(self.path)
                with hub._lock:
                    hub.requests.append((self.command, url.path, self.headers.get("Range")))
                parts = [unquote(part) for part in url.path.strip("/").split("/")]
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                    revision = rest[1] if rest[:1] == ["revision"] and len(rest) == 2 else "main"
                    if repo_id not in hub.repos:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    if revision not in ("main", COMMIT):
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                    blobs = parse_qs(url.query).get("blobs") == ["True"] or parse_qs(url.query).get("blobs") == ["true"]
                    siblings = [hub._sibling(repo_id, name, blobs) for name in hub._files(repo_id)]
                    return self.send_json(200, {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "siblings": siblings})
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo_id, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
                    if repo_id not in hub.repos:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    if revision not in ("main", COMMIT):
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                    if not (hub.repos[repo_id] / path).is_file():
                        return self._error(404, "EntryNotFound", "Entry not found")
                    return self._file(repo_id, path, head)
                return self._error(404, "", "Not found")

            def _file(self, repo_id: str, path: str, head: bool) -> None:
                true = (hub.repos[repo_id] / path).read_bytes()
                data = bytes([true[0] ^ 0xFF]) + true[1:] if path in hub.corrupt and true else true
                start = 0
                ranged = self.headers.get("Range", "")
                if not head and ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
                    start = int(ranged[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                if path.endswith(LFS_SUFFIXES):  # what the hashes of the true bytes say
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(true).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(true)))
                self.send_header("ETag", f'"{git_blob_id(true)}"')
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if head:
                    return
                with hub._lock:
                    cut = path in hub.cut_once
                    hub.cut_once.discard(path)
                body = data[start:]
                if cut:  # half the body, then the connection goes away
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                headers = [("X-Error-Code", code)] if code else []
                self.send_json(status, {"error": message}, [*headers, ("X-Error-Message", message)])

        return Handler
