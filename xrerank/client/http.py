"""One HTTP session to an Xinference REST API: credentials, deadlines and error mapping.

Every request has a timeout. Failures become one of the library's exceptions with a single
readable line; the server's own reason is kept, without the actor address it prefixes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from xrerank.errors import BadInput, ServerError, TimedOut, Unreachable

_ACTOR_PREFIX = re.compile(r"\[address=[^\]]*\]\s*")


def parse_endpoint(endpoint: str) -> str:
    """`endpoint` without its trailing slash, if it is an http(s) URL with a host; else BadInput."""
    from urllib.parse import urlsplit

    text = str(endpoint or "").strip()
    if "@" in text.split("://", 1)[-1].split("/", 1)[0]:  # never echoed: it may hold a password
        raise BadInput("the endpoint holds a user name or password; give them with --username/--password")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f"http://{text}" if text and "://" not in text and " " not in text else "http://127.0.0.1:9997"
        raise BadInput(f"endpoint {text[:80]!r} is not an http(s) URL; use e.g. {hint}")
    if any(character in "\"'\\<>`{}|^" or not character.isprintable() or character.isspace() for character in text):
        raise BadInput(f"endpoint {text[:80]!r} holds a character a URL cannot (quotes, spaces, backslashes...)")
    if port == 0 or parts.query or parts.fragment:
        raise BadInput(f"endpoint {text[:80]!r} is not a server address; use e.g. http://127.0.0.1:9997")
    # OpenAI-style settings end the base URL in /v1; every route xrerank calls starts with it already.
    return text.rstrip("/").removesuffix("/v1").rstrip("/")


def check_api_key(api_key: object, source: str = "the API key") -> str:
    """A key read from a file keeps its newline, and an HTTP header can carry neither that nor non-ASCII."""
    if not isinstance(api_key, str):
        raise BadInput(f"{source} must be a string, got a {type(api_key).__name__}")
    if api_key and api_key.isascii() and api_key.isprintable() and " " not in api_key:
        return api_key
    if not api_key:
        raise BadInput(f"{source} is empty")
    if api_key != api_key.rstrip("\r\n") or "\n" in api_key:
        raise BadInput(f"{source} holds a newline ({len(api_key)} characters); strip it (a key read from a file)")
    raise BadInput(f"{source} holds a space, a tab or a non-ASCII character; an HTTP header cannot carry it")


@dataclass(frozen=True)
class Credentials:
    """An API key (query and rerank only, in Xinference 4.1) and/or a user login (admin operations)."""

    api_key: str | None = None
    username: str | None = None
    password: str | None = None

    def __bool__(self) -> bool:
        return bool(self.api_key or self.username)

    def __repr__(self) -> str:  # never show a secret, even in a traceback
        return f"Credentials(api_key={'***' if self.api_key else None}, username={self.username!r})"


def server_reason(body: str) -> str:
    """The one-line reason in an Xinference error body (JSON `detail`, or the text/plain 500s)."""
    try:
        detail = json.loads(body).get("detail", body)
    except (ValueError, AttributeError):
        detail = body
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    detail = _ACTOR_PREFIX.sub("", detail).strip()
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else "(empty answer)"


class Refused(Unreachable):
    """The server answered 401/403: no credentials, wrong ones, or an API key on an admin endpoint."""


class ConnectionFailed(Unreachable):
    """Nothing answered at the endpoint (refused, reset): worth retrying while a server restarts."""


class Banned(Unreachable):
    """Xinference's rate limiter banned this client's address after repeated failed authentications."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the rest of this module reads it (the shape of a requests.Response)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Api:
    """requests.Session bound to one endpoint; logs in with username/password when given."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        connections: int = 10,
        keep_alive: bool | None = None,
        source_address: str | None = None,
    ) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.endpoint = parse_endpoint(endpoint)
        self.credentials = credentials or Credentials()
        if self.credentials.api_key is not None:
            check_api_key(self.credentials.api_key)
        self.timeout = timeout
        self.source_address = source_address
        # Xinference 4.1's REST server leaves Nagle's algorithm on (uvicorn#3149), so every request
        # after the first on a kept-alive connection waits ~40 ms for the client's delayed ACK;
        # a fresh loopback connection costs ~0.5 ms. Over https a proxy answers and keeps them.
        self.keep_alive = self.endpoint.startswith("https://") if keep_alive is None else keep_alive
        self._session = requests.Session()
        # The environment's proxy and CA settings, read once: requests would look them up again on
        # every request, ~0.4 ms of CPU each, which is what a loaded data plane cannot spare.
        self._settings = self._session.merge_environment_settings(self.endpoint, {}, None, None, None)
        self._session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connections)
        if source_address:
            adapter.poolmanager.connection_pool_kw["source_address"] = (source_address, 0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._user_token: str | None = None
        # Plain http with a connection per request and no proxy: http.client directly, as a minimal
        # loader would. requests' per-request work (preparing, hooks, the pool) costs ~0.4 ms of
        # CPU, which under 48 callers on a machine shared with the server shows up in throughput.
        self._direct = self.endpoint.startswith("http://") and not self.keep_alive and not self._settings["proxies"]

    def close(self) -> None:
        self._session.close()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """Send one request and return its decoded JSON; log in again once if a user token expired."""
        response = self._send(method, path, timeout, kwargs)
        if response.status_code == 401 and self._user_token is not None:
            self._user_token = None
            response = self._send(method, path, timeout, kwargs)
        if response.status_code >= 400:
            raise self._error(method, path, response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise Unreachable(
                f"{self.endpoint} answered {method} {path} with non-JSON content; is this the Xinference REST API?"
            ) from None

    def _send(self, method: str, path: str, timeout: float | None, kwargs: dict) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        token = self._bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self._raw(method, path, timeout, headers=headers, **kwargs)

    def _raw(self, method: str, path: str, timeout: float | None, headers: dict | None = None, **kwargs: Any) -> Any:
        """One HTTP exchange with our deadline; transport failures become our exceptions."""
        import requests

        headers = dict(headers or {})
        if not self.keep_alive:
            headers["Connection"] = "close"
        if self._direct and set(kwargs) <= {"json", "params"}:
            return self._direct_exchange(method, path, timeout or self.timeout, headers, **kwargs)
        url = f"{self.endpoint}{path}"
        try:
            return self._session.request(
                method, url, headers=headers, timeout=timeout or self.timeout, **self._settings, **kwargs
            )
        except requests.exceptions.ConnectTimeout:
            raise self._connect_timed_out() from None
        except requests.exceptions.Timeout:
            raise self._no_answer(method, path, timeout or self.timeout) from None
        except requests.exceptions.ConnectionError:
            raise self._refused() from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
            raise BadInput(f"{self.endpoint} is not a valid URL; use e.g. http://127.0.0.1:9997") from None

    def _direct_exchange(
        self, method: str, path: str, timeout: float, headers: dict, json: Any = None, params: dict | None = None
    ) -> Answer:
        import http.client
        import json as json_module
        from urllib.parse import urlencode, urlsplit

        parts = urlsplit(self.endpoint)
        target = f"{parts.path.rstrip('/')}{path}" + (f"?{urlencode(params)}" if params else "")
        body = None
        if json is not None:
            body = json_module.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        source = (self.source_address, 0) if self.source_address else None
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=timeout, source_address=source
        )
        try:
            try:
                connection.connect()
            except TimeoutError:
                raise self._connect_timed_out() from None
            connection.request(method, target, body, headers)
            response = connection.getresponse()
            return Answer(response.status, response.read())
        except TimeoutError:
            raise self._no_answer(method, path, timeout) from None
        except (OSError, http.client.HTTPException):  # socket.gaierror is an OSError
            raise self._refused() from None
        finally:
            connection.close()

    # How a transport failure reads, whichever way the request went.
    def _connect_timed_out(self) -> Unreachable:
        return Unreachable(f"cannot reach {self.endpoint}: connection timed out; check --endpoint")

    def _no_answer(self, method: str, path: str, timeout: float) -> TimedOut:
        return TimedOut(f"{self.endpoint} did not answer {method} {path} within {timeout:g}s")

    def _refused(self) -> ConnectionFailed:
        return ConnectionFailed(
            f"cannot reach Xinference at {self.endpoint}: connection refused or reset; "
            "start one with `xrerank server start` or check --endpoint"
        )

    def _bearer_token(self) -> str | None:
        if self.credentials.username:
            if self._user_token is None:
                self._user_token = self._login()
            return self._user_token
        return self.credentials.api_key

    def _login(self) -> str:
        credentials = {"username": self.credentials.username, "password": self.credentials.password or ""}
        response = self._raw("POST", "/token", None, json=credentials)
        if response.status_code in (400, 401, 403):
            raise Refused(
                f"login as {self.credentials.username!r} at {self.endpoint} was refused: wrong username or password"
            )
        if response.status_code >= 400:
            raise self._error("POST", "/token", response)
        try:
            return response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            raise Unreachable(
                f"{self.endpoint} answered the login without a token; is this the Xinference REST API?"
            ) from None

    def _error(self, method: str, path: str, response: Any) -> Exception:
        error = self._classified(method, path, response)
        error.status = response.status_code  # type: ignore[attr-defined]
        return error

    def _classified(self, method: str, path: str, response: Any) -> Exception:
        reason = server_reason(response.text)
        status = response.status_code
        if status == 429 and "banned" in reason.lower():
            return Banned(
                f"{self.endpoint} banned this address: {reason} Xinference bans an address after repeated failed "
                "keys or tokens (a stale key in some app on this machine?); the ban ends on its own (by default "
                "an hour after it began; a minute on servers xrerank starts) or when the server restarts; "
                "`xrerank server unban` lifts it on the embedded server, or an admin can call "
                "POST /v1/admin/security/unban-ip from another address"
            )
        if status in (401, 403):
            if status == 401 and self.credentials.api_key and not self.credentials.username:
                hint = "the key is revoked, mistyped or another server's (`xrerank connect --key APP` shows an app's)"
            elif "API key" in reason:
                hint = "API keys may only query and rerank; admin operations need --username/--password"
            else:
                hint = "give --api-key, or --username and --password"
            return Refused(f"{self.endpoint} refused {method} {path} ({status}: {reason}); {hint}")
        if status == 404 and reason == "Not Found":
            return Unreachable(
                f"{self.endpoint} answered but has no {path}: it is not the Xinference REST API; check --endpoint"
            )
        return ServerError(reason, status=status)
