"""The compatibility route: rerank clients that Xinference 4.1 cannot take as they are.

Xinference serves `POST /v1/rerank` and reads a key from `Authorization: Bearer`. Two kinds of
client miss that: the Cohere v2 SDK and everything built on it (cohere.ClientV2, langchain-cohere,
llama-index's and Haystack's Cohere rankers) post `/v2/rerank`, and llama-index's
XinferenceRerank cannot send a header at all, only a URL (where `user:key@host` is sent as
Basic auth). This route answers both on its own port and forwards each request to `/v1/rerank`:

- the body goes through untouched (Xinference's handler reads the v2 body, `max_tokens_per_doc`
  included, and ClientV2 parses its answer);
- the key goes through as a Bearer key: Basic credentials become `Bearer <password>`; the route
  checks nothing itself, so a wrong key gets Xinference's own 401 and the client's own error;
- `X-Forwarded-For` names the caller, so Xinference's limiter bans that caller after repeated bad
  keys, not the route (its uvicorn takes the header while its guard is off, the 4.1 default).

It runs as its own process (aiohttp, one event loop, a fresh connection upstream per request),
started and stopped with the embedded server, or in the foreground by `xrerank gateway` beside
a server xrerank did not start.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xrerank.errors import BadInput, ServerError
from xrerank.files import read_json, write_json_atomically
from xrerank.xinference.machine import advertised_host, can_listen, free_port, local_host, process_identity

STATE_FILE = "gateway.json"
LOG_FILE = "gateway.log"
ROUTES = ("/v2/rerank", "/v1/rerank")
HEALTH = "/xrerank/gateway"
READ_TIMEOUT = 600.0  # a long list on a slow model can take minutes; the caller's own timeout rules
BODY_TIMEOUT = 120.0  # a caller that has not sent its whole body by then is dropped
MAX_BODY = 64 * 1024 * 1024  # the client caps a text at 1M characters; nothing real comes near this
CONNECTIONS = 256  # connections to Xinference at once, at most


def bearer(authorization: str | None) -> str | None:
    """The Authorization header to send upstream: Bearer as it came, Basic's password as a Bearer key.

    A Basic password that cannot be a header value (control characters: CR, LF, NUL...) is dropped:
    the request goes on without a key and Xinference refuses it in its own words."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return authorization
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return authorization  # sent on as it is: Xinference refuses it in its own words
    key = decoded.partition(":")[2]
    return f"Bearer {key}" if key.isprintable() else None


class _QuietServerLog:
    """aiohttp logs a malformed request with its traceback and the offending bytes, which can be part of
    a key: one line naming the error is kept, without either."""

    def filter(self, record) -> bool:  # logging.Filter's protocol
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = f"refused a malformed request: {type(record.exc_info[1]).__name__}", ()
            record.exc_info = record.exc_text = None
        return True


def application(upstream: str, watch_pid: int | None = None):  # -> aiohttp.web.Application
    """The route as an aiohttp app forwarding to `upstream` (Xinference's base URL)."""
    import asyncio

    import aiohttp
    from aiohttp import web

    target = f"{upstream.rstrip('/')}/v1/rerank"
    sessions: list[aiohttp.ClientSession] = []

    async def forward(request: web.Request) -> web.Response:
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        authorization = bearer(request.headers.get("Authorization"))
        if authorization:
            headers["Authorization"] = authorization
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        try:
            body = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
        except asyncio.TimeoutError:
            return web.json_response({"detail": f"the body did not arrive within {BODY_TIMEOUT:g} s"}, status=408)
        try:
            async with sessions[0].post(target, data=body, headers=headers) as answer:
                payload = await answer.read()
                return web.Response(status=answer.status, body=payload, content_type=answer.content_type)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            detail = f"Xinference at {upstream} did not answer ({type(exc).__name__})"
            return web.json_response({"detail": detail}, status=502)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"upstream": upstream, "routes": list(ROUTES), "pid": os.getpid()})

    async def elsewhere(request: web.Request) -> web.Response:
        detail = f"this route serves POST {' and '.join(ROUTES)}; the rest of the API is at {upstream}"
        return web.json_response({"detail": detail}, status=404)

    async def open_pool(app: web.Application) -> None:
        # A fresh connection per request: Xinference 4.1's uvicorn leaves Nagle's algorithm on, and on a
        # kept-alive connection each answer then waits ~40 ms for a delayed ACK (measured: +45 ms at p50).
        connector = aiohttp.TCPConnector(limit=CONNECTIONS, ttl_dns_cache=None, force_close=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=READ_TIMEOUT)
        sessions.append(aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False))
        if watch_pid is not None:
            app["watch"] = asyncio.create_task(_exit_with(watch_pid))

    async def close_pool(app: web.Application) -> None:
        for session in sessions:
            await session.close()

    app = web.Application(client_max_size=MAX_BODY)
    for route in ROUTES:
        app.router.add_post(route, forward)
    app.router.add_get(HEALTH, health)
    app.router.add_route("*", "/{tail:.*}", elsewhere)
    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    return app


async def _exit_with(pid: int) -> None:
    """End this process when the server it fronts is gone (killed without `xrerank server stop`)."""
    import asyncio

    while True:
        await asyncio.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except PermissionError:
            pass


def serve(upstream: str, host: str, port: int, watch_pid: int | None = None) -> None:
    """Serve the route in the foreground until SIGINT or SIGTERM."""
    import logging

    from aiohttp import web

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("aiohttp.server", "aiohttp.web"):
        logging.getLogger(name).addFilter(_QuietServerLog())
    # handler_cancellation: a caller that hangs up cancels its forward (Xinference finishes the scoring,
    # as it does for a direct caller that hangs up).
    web.run_app(application(upstream, watch_pid), host=host, port=port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=5, handler_cancellation=True)  # fmt: skip


# --- beside the embedded server --------------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    pid: int
    host: str
    port: int
    upstream: str
    identity: str | None

    @property
    def url(self) -> str:
        return f"http://{local_host(self.host)}:{self.port}"

    @property
    def advertised_url(self) -> str:
        return f"http://{advertised_host(self.host)}:{self.port}"


def running(directory: Path) -> Gateway | None:
    """The route recorded in `directory`, if its process is the one xrerank started there."""

    recorded = read_json(directory / STATE_FILE)
    try:
        gateway = Gateway(int(recorded["pid"]), str(recorded["host"]), int(recorded["port"]),
                          str(recorded["upstream"]), recorded.get("identity"))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    if gateway.identity is None or process_identity(gateway.pid) != gateway.identity:
        return None
    try:
        command = Path(f"/proc/{gateway.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return gateway if __name__ in command and f"--port {gateway.port}" in command else None


def lost(directory: Path) -> bool:
    """Was a route started here that no longer runs (killed, crashed)?"""
    return (directory / STATE_FILE).exists() and running(directory) is None


def start_beside(directory: Path, upstream: str, host: str, port: int, watch_pid: int,
                 timeout: float = 20.0) -> Gateway:  # fmt: skip
    """Start the route for the embedded server in `directory` (or return the one running)."""
    from xrerank.client.http import Api
    from xrerank.errors import XrerankError

    current = running(directory)
    if current is not None and (current.upstream, current.port) == (upstream, port):
        return current
    if (current is None or current.port != port) and not can_listen(port):  # the running route stays as it is
        raise BadInput(f"port {port} (the Cohere-v2 route) is in use by another program; choose one with --v2-port, "
                       "or turn the route off with --v2-port 0")  # fmt: skip
    stop_beside(directory)
    log = os.open(directory / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    command = [sys.executable, "-m", __name__, "--upstream", upstream, "--host", host, "--port", str(port),
               "--watch-pid", str(watch_pid)]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    os.close(log)
    gateway = Gateway(process.pid, host, port, upstream, process_identity(process.pid))
    write_json_atomically(directory / STATE_FILE, {"pid": gateway.pid, "host": host, "port": port,
                          "upstream": upstream, "identity": gateway.identity}, mode=0o600)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (directory / STATE_FILE).unlink(missing_ok=True)
            raise ServerError(f"the Cohere-v2 route exited with code {process.returncode} while starting; "
                              f"see {directory / LOG_FILE}")  # fmt: skip
        with contextlib.suppress(XrerankError):
            Api(gateway.url, timeout=2).get(HEALTH)
            return gateway
        time.sleep(0.2)
    stop_beside(directory)
    raise ServerError(f"the Cohere-v2 route did not answer on {gateway.url} in time; see {directory / LOG_FILE}")


def stop_beside(directory: Path, timeout: float = 10.0) -> bool:
    """Stop the route recorded in `directory`; True if one ran. A pid that is another process now is
    never signalled."""
    gateway = running(directory)
    if gateway is None:
        (directory / STATE_FILE).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(gateway.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(directory) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if running(directory) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gateway.pid, signal.SIGKILL)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return True


def choose_port(server_port: int, asked: int | None, directory: Path | None = None) -> int | None:
    """The route's port: the one asked for, none for 0, else the one it had in `directory` (apps keep
    their URL when a killed route comes back), else the server's port + 1, else any, while free."""

    if asked is not None:
        return asked or None
    had = (read_json(directory / STATE_FILE) or {}).get("port") if directory is not None else None
    for port in (had, server_port + 1):
        if isinstance(port, int) and 0 < port <= 65535 and port != server_port and can_listen(port):
            return port
    return free_port()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xrerank.xinference.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="Xinference's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--watch-pid", type=int, help="exit when this process is gone")
    options = parser.parse_args(argv)
    serve(options.upstream, options.host, options.port, options.watch_pid)


if __name__ == "__main__":
    main()
