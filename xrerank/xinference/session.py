"""Which server, and which credentials for which traffic.

Connection settings come from flag > env var > deployment file > default, and credentials last
of all from the embedded server's own file. Two planes: admin operations (register, launch,
terminate, keys) use the user login; rerank traffic (rerank, bench, tune's trials, verify, the
client) uses an API key. Xinference 4.1 checks a login token against its database several times
per request on its event loop, so under 48 callers a login-token client got 2.7 requests/s where
an API key got ~60; with only a username and password, xrerank creates (or reuses) a key of its
own for the data plane.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xrerank.client.http import Credentials, parse_endpoint
from xrerank.defaults import DEFAULT_ENDPOINT
from xrerank.files import xrerank_home

if TYPE_CHECKING:
    from xrerank.xinference.server import Xinference


@dataclass
class Options:
    """The group's connection options as given (None: not given)."""

    endpoint: str | None = None
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0


@dataclass
class Session:
    """A server to administer, and the credential its rerank traffic uses."""

    server: Xinference
    home: Path
    warn: Callable[[str], None] = lambda message: None
    _data: Credentials | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def timeout(self) -> float:
        return self.server.api.timeout

    @property
    def source_address(self) -> str | None:
        return self.server.api.source_address

    def metrics_url(self) -> str | None:
        """The Prometheus exporter of the worker, where xrerank knows it: the embedded server's."""
        from xrerank.xinference.local import embedded_at

        embedded = embedded_at(self.endpoint)
        return embedded.metrics_url if embedded is not None else None

    def data_credentials(self) -> Credentials:
        """An API key for rerank traffic: the one given, else one xrerank keeps for this user."""
        if self._data is None:
            given = self.server.credentials
            if given.api_key or not given.username:
                self._data = Credentials(api_key=given.api_key)
            else:
                from xrerank.xinference.keys import data_plane_key

                key = data_plane_key(self.server, self.home, self.warn)
                self._data = Credentials(api_key=key) if key else given
        return self._data


def endpoint_of(options: Options, deployment: object = None) -> str:
    """flag/env var > the deployment file's > the embedded server, when it runs > the default."""
    given = options.endpoint or getattr(deployment, "endpoint", None)
    if given:
        return parse_endpoint(given)
    from xrerank.xinference.local import default_server_dir, inspect_server_process

    embedded = inspect_server_process(default_server_dir())
    return embedded.endpoint if embedded is not None else DEFAULT_ENDPOINT


def credentials_for(options: Options, endpoint: str, deployment: object = None) -> Credentials:
    """flag/env var > the deployment file's named env vars > the embedded server's own > none."""
    from xrerank.xinference.local import local_credentials

    if options.api_key or options.username:
        return Credentials(options.api_key, options.username, options.password)
    names = getattr(deployment, "credentials", None)
    if names is not None:
        from_env = Credentials(
            os.environ.get(names.api_key_env),
            os.environ.get(names.username_env),
            os.environ.get(names.password_env),
        )
        if from_env:
            return from_env
    return local_credentials(endpoint) or Credentials()


def own_source_address(endpoint: str) -> str | None:
    """The address xrerank sends from to a server on this machine: 127.0.0.2 where the system allows.

    Every local program reaches a loopback server from 127.0.0.1, and Xinference bans an address
    after repeated failed keys; from its own address, xrerank stays able to see and lift a ban
    that another program caused. XRERANK_SOURCE_ADDRESS sets another address, or "none"."""
    from urllib.parse import urlsplit

    from xrerank.xinference.local import spare_loopback

    setting = source_address_setting()
    if setting != "auto":
        return setting
    host = urlsplit(endpoint).hostname or ""
    return spare_loopback() if host.startswith("127.") else None


def source_address_setting() -> str | None:
    """XRERANK_SOURCE_ADDRESS: "auto" (also when unset or empty), None for "none", else an address
    this machine can send from (checked: a typo would read as "cannot reach Xinference")."""
    from xrerank.errors import BadInput
    from xrerank.xinference.local import can_send_from

    setting = os.environ.get("XRERANK_SOURCE_ADDRESS", "").strip() or "auto"
    if setting.lower() in ("auto", "none"):
        return None if setting.lower() == "none" else "auto"
    if not can_send_from(setting):
        raise BadInput(
            f"XRERANK_SOURCE_ADDRESS={setting[:60]!r} is not an address this machine can send from; "
            "use auto, none, or one of its own addresses (127.0.0.2 for a local server)"
        )
    return setting


def open_session(options: Options, deployment: object = None, warn: Callable[[str], None] | None = None) -> Session:
    from xrerank.xinference.server import Xinference

    endpoint = endpoint_of(options, deployment)
    credentials = credentials_for(options, endpoint, deployment)
    server = Xinference(endpoint, credentials, options.timeout, own_source_address(endpoint))
    return Session(server, xrerank_home(), warn or (lambda message: None))
