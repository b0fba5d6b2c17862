"""The embedded local Xinference: one directory holds its home, log, pid and credentials.

Auth stays on (Xinference 4.1's default). On first start we read the one-time setup token from
the server's log, create the admin account with a random password, and create an API key for
clients; both go to `credentials.json`, readable by its owner only, and are never printed.
"""

from __future__ import annotations

import json
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

from .errors import BadInput, ServerError, TimedOut, XrerankError
from .http import Api, Credentials
from .modeldir import write_json_atomically

DEFAULT_PORT = 9997
STATE_FILE = "server.json"
CREDENTIALS_FILE = "credentials.json"
LOG_FILE = "xinference.log"
ADMIN_USER = "admin"
_SETUP_TOKEN = re.compile(r"Setup token: (\S+)")


def xrerank_home() -> Path:
    return Path(os.environ.get("XRERANK_HOME") or Path.home() / ".xrerank").expanduser()


def default_server_dir() -> Path:
    return xrerank_home() / "server"


@dataclass(frozen=True)
class LocalServer:
    directory: Path
    pid: int
    endpoint: str
    auth: bool


def read_state(directory: Path) -> LocalServer | None:
    """The server recorded in `directory`, if its process is still alive."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _alive(state["pid"]):
        return None
    return LocalServer(directory, state["pid"], state["endpoint"], state["auth"])


def local_credentials(endpoint: str, directory: Path | None = None) -> Credentials | None:
    """The credentials of the embedded server at `endpoint`, so its own commands need no flags."""
    directory = directory or default_server_dir()
    server = read_state(directory)
    if server is None or server.endpoint.rstrip("/") != endpoint.rstrip("/") or not server.auth:
        return None
    try:
        stored = json.loads((directory / CREDENTIALS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Credentials(api_key=stored.get("api_key"), username=stored.get("username"), password=stored.get("password"))


def start(
    directory: Path, port: int = DEFAULT_PORT, auth: bool = True, timeout: float = 180.0
) -> tuple[LocalServer, bool]:
    """Start xinference-local on 127.0.0.1:`port` unless it already runs; return it and whether it was started."""
    directory = directory.expanduser().resolve()
    running = read_state(directory)
    if running is not None:
        return running, False
    if _port_in_use(port):
        raise BadInput(f"port {port} on 127.0.0.1 is in use by another program; choose one with --port")
    executable = shutil.which("xinference-local") or str(Path(sys.executable).with_name("xinference-local"))
    if not Path(executable).exists():
        raise XrerankError("xinference-local is not installed here; run scripts/install.sh")
    directory.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "XINFERENCE_HOME": str(directory / "home"), "HF_HUB_OFFLINE": "1"}
    env["XINFERENCE_AUTH_ADVANCED"] = "1" if auth else "0"
    log = os.open(directory / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log_start = os.lseek(log, 0, os.SEEK_END)
    process = subprocess.Popen(
        [executable, "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,  # its own process group, so stop() reaches the model processes too
    )
    os.close(log)
    server = LocalServer(directory, process.pid, endpoint, auth)
    write_json_atomically(
        directory / STATE_FILE, {"pid": process.pid, "endpoint": endpoint, "auth": auth, "port": port}
    )
    try:
        _wait_until_answering(server, process, time.monotonic() + timeout)
        if auth:
            _bootstrap_credentials(server, log_start)
    except BaseException:
        stop(directory)
        raise
    return server, True


def stop(directory: Path, timeout: float = 30.0) -> bool:
    """Stop the server recorded in `directory` (SIGTERM to its group, SIGKILL at the deadline)."""
    directory = directory.expanduser().resolve()
    server = read_state(directory)
    (directory / STATE_FILE).unlink(missing_ok=True)
    if server is None:
        return False
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while _alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(server.pid):
        os.killpg(server.pid, signal.SIGKILL)
    return True


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
    api_key = admin.post("/v1/admin/keys", json={"name": "xrerank-clients"})["key"]
    descriptor = os.open(credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump({"username": ADMIN_USER, "password": password, "api_key": api_key}, stream)


def _setup_token(log_path: Path, log_start: int) -> str:
    with log_path.open("rb") as stream:
        stream.seek(log_start)
        match = _SETUP_TOKEN.search(stream.read().decode("utf-8", "replace"))
    if match is None:
        raise XrerankError(f"the server asks for first-run setup but {log_path} shows no setup token")
    return match.group(1)


def _wait_until_answering(server: LocalServer, process: subprocess.Popen, deadline: float) -> None:
    import requests

    while True:
        if process.poll() is not None:
            raise ServerError(
                f"xinference-local exited with code {process.returncode} while starting; "
                f"see {server.directory / LOG_FILE}"
            )
        try:
            # /v1/cluster/auth answers without credentials once the REST API is up.
            if requests.get(f"{server.endpoint}/v1/cluster/auth", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            raise TimedOut(f"xinference-local did not answer on {server.endpoint} in time; see its log")
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
