"""The embedded local Xinference: one private directory holds its home, log, pid and credentials.

Auth stays on (Xinference 4.1's default). On first start we read the one-time setup token from
the server's log, create the admin account with a random password, and create an API key for
clients; both go to `credentials.json`, readable by its owner only, and are never printed.

A recorded server is only ever signalled after checking that the pid is still the process we
started (its start time and command line): after a crash the pid may belong to anything.

The rate limiter is set for a machine where many programs share 127.0.0.1: an address is
banned after 100 failed keys or tokens in a minute, for a minute (Xinference's default is 10 in
five minutes, for an hour, which lets one app with a stale key lock every local program out).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xrerank.client.http import Api, Banned, Credentials, Refused
from xrerank.errors import BadInput, ServerError, TimedOut, XrerankError, server_side_needed
from xrerank.files import private_directory, read_json, write_json_atomically, xrerank_home
from xrerank.xinference.machine import (
    advertised_host,
    free_port,
    local_host,
    port_in_use,
    process_identity,
)

DEFAULT_PORT = 9997
STATE_FILE = "server.json"
CREDENTIALS_FILE = "credentials.json"
LOG_FILE = "xinference.log"
ADMIN_USER = "admin"
CLIENT_KEY_NAME = "xrerank-clients"
_SETUP_TOKEN = re.compile(r"Setup token: (\S+)")
RATE_LIMITS = {
    "XINFERENCE_RATE_LIMIT_IP_MAX_FAILURES": "100",
    "XINFERENCE_RATE_LIMIT_IP_WINDOW_SECONDS": "60",
    "XINFERENCE_RATE_LIMIT_IP_BAN_SECONDS": "60",
}


def default_server_dir() -> Path:
    return xrerank_home() / "server"


@dataclass(frozen=True)
class LocalServer:
    directory: Path
    pid: int
    port: int
    host: str  # what it listens on
    auth: bool
    started: float  # the process's start time by the wall clock, for people and where `identity` is unknown
    metrics_port: int | None = None  # its worker's Prometheus exporter, on 127.0.0.1
    identity: str | None = None  # the boot and the clock tick it started at: tells it from a later process
    trust_remote_code: bool = False  # started with XINFERENCE_TRUST_REMOTE_CODE=1: repositories' code runs

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    @property
    def endpoint(self) -> str:
        """What xrerank on this machine uses (loopback when the server listens on every address)."""
        return f"http://{local_host(self.host)}:{self.port}"

    @property
    def advertised_endpoint(self) -> str:
        """What an app on another host (or in a container) uses."""
        return f"http://{advertised_host(self.host)}:{self.port}"

    def serves(self, endpoint: str) -> bool:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        if parts.port != self.port:
            return False
        return parts.hostname in {local_host(self.host), advertised_host(self.host), "localhost", "127.0.0.1"}


@dataclass(frozen=True)
class ServerState:
    state: str  # "running", "not answering", "stale" or "not running"
    server: LocalServer | None
    detail: str = ""


def _recorded(directory: Path) -> LocalServer | None:
    """The server the state file in `directory` names, whatever runs under its pid now."""
    recorded = read_json(directory / STATE_FILE)
    try:
        return LocalServer(
            directory,
            int(recorded["pid"]),
            int(recorded["port"]),
            str(recorded.get("host", "127.0.0.1")),
            bool(recorded["auth"]),
            float(recorded["started"]),
            int(recorded["metrics_port"]) if recorded.get("metrics_port") else None,
            str(recorded["identity"]) if recorded.get("identity") else None,
            bool(recorded.get("trust_remote_code", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def inspect_server(directory: Path) -> ServerState:
    """What the state file in `directory` says, checked against the process and the port."""
    directory = directory.expanduser().resolve()
    if not (directory / STATE_FILE).exists():
        return ServerState("not running", None)
    server = _recorded(directory)
    if server is None:
        return ServerState("stale", None, f"{directory / STATE_FILE} is not a state file this xrerank wrote")
    mismatch = _not_ours(server)
    if mismatch == "gone":
        return ServerState("not running", server, f"pid {server.pid} has exited")
    if mismatch:
        return ServerState("stale", server, f"pid {server.pid} is another process now ({mismatch})")
    if not answers(server.endpoint):
        return ServerState("not answering", server, f"pid {server.pid} runs but {server.endpoint} does not answer")
    return ServerState("running", server)


def inspect_server_process(directory: Path) -> LocalServer | None:
    """The server recorded in `directory`, if its process is the one xrerank started."""
    server = _recorded(directory.expanduser().resolve())
    return server if server is not None and _not_ours(server) is None else None


def embedded_at(endpoint: str, directory: Path | None = None) -> LocalServer | None:
    """The embedded server (recorded in `directory`, else the default one), if it is the one at `endpoint`."""
    server = inspect_server_process(directory or default_server_dir())
    return server if server is not None and server.serves(endpoint) else None


def local_credentials(endpoint: str, directory: Path | None = None) -> Credentials | None:
    """The credentials of the embedded server at `endpoint`, so its own commands need no flags."""
    directory = directory or default_server_dir()
    server = embedded_at(endpoint, directory)
    if server is None or not server.auth:
        return None
    stored = read_json(directory / CREDENTIALS_FILE, strict=True)
    if stored is None:
        return None
    return Credentials(api_key=stored.get("api_key"), username=stored.get("username"), password=stored.get("password"))


def embedded_api_key(endpoint: str, directory: Path | None = None) -> str | None:
    """The data-plane key of the embedded server at `endpoint` (None if xrerank did not start it, or
    it runs without auth): what an app on this machine passes as `Reranker(..., api_key=)`."""
    credentials = local_credentials(endpoint, directory)
    return credentials.api_key if credentials else None


def untrusting(directory: Path) -> BadInput:
    """The refusal for a model that ships code, when the embedded server was started without trust."""
    return BadInput(
        f"the embedded server in {directory} runs without XINFERENCE_TRUST_REMOTE_CODE=1, which this model's "
        "own code needs; restarting it stops every model on it for about a minute: xrerank down, then run "
        "this command again"
    )


def start(
    directory: Path,
    port: int = DEFAULT_PORT,
    auth: bool = True,
    timeout: float = 180.0,
    host: str = "127.0.0.1",
    trust_remote_code: bool = False,
    v2_port: int | None = None,
) -> tuple[LocalServer, bool]:
    """Start xinference-local on `host`:`port` unless it already runs; return it and whether it was started.

    With `trust_remote_code`, the server runs the code that model repositories ship (auto_map), as
    Xinference 4.1 does only under XINFERENCE_TRUST_REMOTE_CODE=1; a server already running without
    it is refused (BadInput): it must be restarted, which stops the models on it.

    Beside it runs the Cohere-v2 route (xrerank.xinference.gateway) on `v2_port`: by default the
    server's port + 1 when free, else any free port; 0 turns it off. A server found running gets its
    route started if it has none."""
    host = check_host(host, auth)
    if v2_port is not None and v2_port == port:
        raise BadInput(f"--v2-port {v2_port} is the server's own --port; choose another, or 0 for no Cohere-v2 route")
    executable = shutil.which("xinference-local") or str(Path(sys.executable).with_name("xinference-local"))
    if not Path(executable).exists():
        raise server_side_needed(
            "starting a server", ["xinference-local"]
        )  # checked first: a client-only install creates nothing
    directory = private_directory(directory.expanduser().resolve())
    current = inspect_server(directory)
    if current.state in ("running", "not answering") and current.server is not None:
        if (current.server.port, current.server.host) != (port, host):
            raise BadInput(
                f"the embedded server in {directory} already runs on {current.server.host}:{current.server.port}; "
                "stop it first (xrerank server stop) to start it elsewhere"
            )
        if trust_remote_code and not current.server.trust_remote_code:
            raise untrusting(directory)
        ensure_route(current.server, v2_port)
        return current.server, False
    if port_in_use(port):
        raise BadInput(f"port {port} is in use by another program; choose one with --port")
    home = private_directory(directory / "home")
    env = {**os.environ, "XINFERENCE_HOME": str(home), "HF_HUB_OFFLINE": "1", **RATE_LIMITS}
    env["XINFERENCE_AUTH_ADVANCED"] = "1" if auth else "0"
    env["XINFERENCE_TRUST_REMOTE_CODE"] = "1" if trust_remote_code else "0"  # never inherited by accident
    deadline = time.monotonic() + timeout
    for attempt in range(1 + PORT_RACE_RETRIES):
        server, process, log_start = _spawn(executable, directory, env, port, host, auth, trust_remote_code)
        try:
            _wait_until_answering(server, process, deadline)
            break
        except ServerError:
            if attempt == PORT_RACE_RETRIES or not _lost_a_port_race(directory / LOG_FILE, log_start):
                stop(directory)
                raise
            # xinference-local picks its internal ports itself, and another program can take one between
            # its check and its bind ("address already in use"): start it again.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.pid, signal.SIGKILL)
            (directory / STATE_FILE).unlink(missing_ok=True)
        except BaseException:
            stop(directory)
            raise
    try:
        if auth:
            _bootstrap_credentials(server, log_start)
        ensure_route(server, v2_port)
    except BaseException:
        stop(directory)
        raise
    return server, True


def ensure_route(server: LocalServer, v2_port: int | None = None) -> None:
    """The Cohere-v2 route beside `server` on `v2_port` (None: the port it has, else --port + 1 or any;
    0: none), started again if it was killed."""
    from xrerank.xinference import gateway

    current = gateway.running(server.directory)
    if current is not None and v2_port is None:
        return  # the route keeps the port it has
    port = gateway.choose_port(server.port, v2_port, server.directory)
    if port is None:
        gateway.stop_beside(server.directory)
        return
    for attempt in range(1 + PORT_RACE_RETRIES):
        try:
            gateway.start_beside(server.directory, server.endpoint, server.host, port, server.pid)
            return
        except ServerError:
            # A port chosen here can be taken between the check and the route's bind: another free one.
            if v2_port is not None or attempt == PORT_RACE_RETRIES:
                raise
            port = free_port()


PORT_RACE_RETRIES = 2


def _spawn(
    executable: str, directory: Path, env: dict, port: int, host: str, auth: bool, trust_remote_code: bool
) -> tuple[LocalServer, subprocess.Popen, int]:
    """xinference-local started in its own process group and recorded; also where its log starts."""
    log = os.open(directory / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log_start = os.lseek(log, 0, os.SEEK_END)
    metrics_port = free_port()
    process = subprocess.Popen(
        [executable, "--host", host, "--port", str(port), "-MH", "127.0.0.1", "-mp", str(metrics_port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,  # its own process group, so stop() reaches the model processes too
    )
    os.close(log)
    started = _create_time(process.pid) or time.time()
    identity = process_identity(process.pid)
    server = LocalServer(directory, process.pid, port, host, auth, started, metrics_port, identity, trust_remote_code)
    state = {"pid": server.pid, "port": port, "host": host, "auth": auth, "started": started}
    state |= {"metrics_port": metrics_port, "identity": identity, "trust_remote_code": trust_remote_code}
    write_json_atomically(directory / STATE_FILE, state, mode=0o600)
    return server, process, log_start


def _lost_a_port_race(log_path: Path, log_start: int) -> bool:
    """Did this start's log end on a bind that found its port taken?"""
    with log_path.open("rb") as stream:
        stream.seek(log_start)
        return b"address already in use" in stream.read()


def stop(directory: Path, timeout: float = 30.0) -> ServerState:
    """Stop the recorded server (SIGTERM to its group, SIGKILL at the deadline).

    Its state is "stopped", "not running", or "stale" when the recorded pid is another process now
    (the detail says why): that one is never signalled."""
    from xrerank.xinference.gateway import stop_beside

    directory = directory.expanduser().resolve()
    stop_beside(directory)
    state = inspect_server(directory)
    if state.state in ("not running", "stale"):
        (directory / STATE_FILE).unlink(missing_ok=True)
        left = _stop_leftovers(state.server) if state.server is not None else 0
        if left:
            state = ServerState(state.state, state.server, f"{state.detail}; stopped {left} process(es) it left behind")
        return state
    server = state.server
    assert server is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _not_ours(server) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if _not_ours(server) is None:
        os.killpg(server.pid, signal.SIGKILL)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return ServerState("stopped", server)


def _stop_leftovers(server: LocalServer, timeout: float = 10.0) -> int:
    """Stop what a killed server left running (its supervisor, its model replicas): the processes of its
    process group that still hold its XINFERENCE_HOME. Anything else in that group is left alone."""
    import psutil

    home = str(server.directory / "home")
    leftovers = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == server.pid and process.environ().get("XINFERENCE_HOME") == home:
                leftovers.append(process)
        except (psutil.Error, OSError):
            continue
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return len(leftovers)


def unban(directory: Path) -> int:
    """Lift every address ban on the embedded server; returns how many were lifted.

    A banned address cannot even use an admin login, so the request goes out from each loopback
    address in turn (Linux answers on all of 127.0.0.0/8) until one is not banned: the one
    XRERANK_SOURCE_ADDRESS names, 127.0.0.1, then 127.0.0.2 to 127.0.0.9."""
    server = inspect_server_process(directory)
    if server is None:
        raise XrerankError(f"no embedded server runs from {directory}; start it with `xrerank server start`")
    credentials = local_credentials(server.endpoint, directory)
    if credentials is None:
        raise XrerankError("the embedded server runs with auth off: nothing is ever banned")
    tried = []
    for source in _unban_sources():
        try:
            answer = Api(server.endpoint, credentials, source_address=source).post("/v1/admin/security/unban-all-ips")
        except Banned:
            tried.append(source or "127.0.0.1")
            continue
        return int((answer or {}).get("unbanned", 0))
    raise Banned(
        f"every loopback address tried is banned ({', '.join(tried)}); the bans end on their own within a "
        "minute on a server xrerank started, or restart it: xrerank server stop && xrerank server start"
    )


def _unban_sources() -> list[str | None]:
    configured = os.environ.get("XRERANK_SOURCE_ADDRESS", "").strip()
    sources: list[str | None] = [configured] if can_send_from(configured) else []
    sources.append(None)
    sources += [address for address in (f"127.0.0.{n}" for n in range(2, 10)) if can_send_from(address)]
    return list(dict.fromkeys(sources))


def spare_loopback() -> str | None:
    """A loopback address other than 127.0.0.1 that this machine can send from, or None."""
    return "127.0.0.2" if can_send_from("127.0.0.2") else None


def can_send_from(address: str) -> bool:
    """Is `address` an IPv4 address of this machine (binding to it works)?"""
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def check_host(host: str, auth: bool) -> str:
    """An address to listen on; one reachable from other hosts requires auth."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise BadInput(
            f"--host {host!r} is not an IP address; use 127.0.0.1, 0.0.0.0 or one of this machine's"
        ) from None
    if not address.is_loopback and not auth:
        raise BadInput(
            f"--host {host} makes the server reachable from other machines, and --no-auth would let anyone "
            "there use it; keep auth on, or listen on 127.0.0.1"
        )
    return str(address)


def _bootstrap_credentials(server: LocalServer, log_start: int) -> None:
    credentials_path = server.directory / CREDENTIALS_FILE
    api = Api(server.endpoint)
    status = api.get("/v1/admin/setup/status")
    if not status.get("needs_setup"):
        if credentials_path.exists():
            return
        raise XrerankError(
            f"the server in {server.directory} was set up before but {credentials_path} is gone; "
            "give --username/--password, or start with a new --home"
        )
    token = _setup_token(server.directory / LOG_FILE, log_start)
    password = secrets.token_urlsafe(24)
    api.post("/v1/admin/setup", json={"setup_token": token, "username": ADMIN_USER, "password": password})
    admin = Api(server.endpoint, Credentials(username=ADMIN_USER, password=password))
    api_key = admin.post("/v1/admin/keys", json={"name": CLIENT_KEY_NAME})["key"]
    write_json_atomically(
        credentials_path, {"username": ADMIN_USER, "password": password, "api_key": api_key}, mode=0o600
    )


def _setup_token(log_path: Path, log_start: int) -> str:
    with log_path.open("rb") as stream:
        stream.seek(log_start)
        match = _SETUP_TOKEN.search(stream.read().decode("utf-8", "replace"))
    if match is None:
        raise XrerankError(f"the server asks for first-run setup but {log_path} shows no setup token")
    return match.group(1)


def _wait_until_answering(server: LocalServer, process: subprocess.Popen, deadline: float) -> None:
    while True:
        if process.poll() is not None:
            raise ServerError(
                f"xinference-local exited with code {process.returncode} while starting; "
                f"see {server.directory / LOG_FILE}"
            )
        if answers(server.endpoint):
            return
        if time.monotonic() >= deadline:
            raise TimedOut(f"xinference-local did not answer on {server.endpoint} in time; see its log")
        time.sleep(0.5)


def answers(endpoint: str) -> bool:
    """/v1/cluster/auth answers without credentials (and through a ban) once the REST API is up."""
    try:
        Api(endpoint, timeout=2).get("/v1/cluster/auth")
    except Refused:
        return True
    except XrerankError:
        return False
    return True


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _not_ours(server: LocalServer) -> str | None:
    """None when `server.pid` is the xinference-local xrerank started; else why not ("gone" if no process)."""
    import psutil

    try:
        process = psutil.Process(server.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return "gone"
        started, command = process.create_time(), " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return "gone"
    except psutil.Error as exc:
        return f"cannot inspect it: {exc}"
    identity = process_identity(server.pid) if server.identity else None
    if identity != server.identity if identity else abs(started - server.started) > 1.0:
        return "it started at another time"
    if "xinference-local" not in command or f"--port {server.port}" not in command:
        return f"its command line is {command[:80]!r}"
    return None
