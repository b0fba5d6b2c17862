"""API keys: one per app, and the one xrerank keeps for its own rerank traffic.

Keys go through Xinference 4.1's key API (/v1/admin/keys), which only a user login may call. A
key may query and rerank, nothing else; it can be limited to named model uids. Revoking a key
disables it rather than deleting it: an app still sending a disabled key is refused per key,
while an unknown (deleted) key counts towards banning the app's whole address.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from .errors import BadInput
from .files import file_name, private_directory, read_json, write_json_atomically
from .http import Refused
from .server import ApiKey, Xinference

DATA_PLANE_PREFIX = "xrerank-data-"
APP_PREFIX = "app-"


def data_plane_key(server: Xinference, home: Path, warn: Callable[[str], None]) -> str | None:
    """The API key xrerank uses for its own rerank traffic with this user's login, created once and
    kept (0600) in $XRERANK_HOME/keys; None, with one warning, when this user may not create keys."""
    import secrets

    path = _cache(home, server)
    cached = read_json(path)
    try:
        if cached and any(k.id == cached.get("id") and k.enabled for k in server.api_keys()):
            return cached["key"]
        name = f"{DATA_PLANE_PREFIX}{socket.gethostname()[:40]}-{secrets.token_hex(3)}"
        key, secret = server.create_key(name)
    except Refused:
        warn(
            f"note: {server.credentials.username!r} may not create API keys, so rerank traffic uses the login "
            "token, which Xinference 4.1 checks slowly under load; give --api-key for full speed"
        )
        return None
    write_json_atomically(path, {"id": key.id, "name": key.name, "key": secret}, mode=0o600)
    return secret


def _cache(home: Path, server: Xinference) -> Path:
    endpoint = server.endpoint.split("://", 1)[-1]
    return private_directory(home / "keys") / file_name(server.credentials.username or "", endpoint, suffix=".json")


def create_app_key(server: Xinference, app: str, model_uids: tuple[str, ...] = ()) -> tuple[ApiKey, str]:
    """A key for one app (named `app-<NAME>` on the server), limited to `model_uids` when given."""
    if app_key(server, app):
        raise BadInput(f"a key named {app!r} exists already; revoke it first or choose another name")
    return server.create_key(APP_PREFIX + app, model_uids)


def app_keys(server: Xinference) -> list[ApiKey]:
    return [key for key in server.api_keys() if key.name.startswith(APP_PREFIX)]


def app_key(server: Xinference, app: str) -> list[ApiKey]:
    """The keys named for `app` (one, unless made outside xrerank), enabled or not."""
    _check_app_name(app)
    return [key for key in server.api_keys() if key.name == APP_PREFIX + app]


def revoke_app_key(server: Xinference, app: str) -> str:
    """Disable the app's key at once: "revoked", or "absent" when there is none (or it is off already)."""
    found = app_key(server, app)
    if not found or not any(k.enabled for k in found):
        return "absent"
    for key in found:
        server.disable_key(key.id)
    return "revoked"


def _check_app_name(app: str) -> None:
    if not app or len(app) > 60 or not all(c.isalnum() or c in "-_." for c in app):
        raise BadInput(f"app name {app[:60]!r} is not allowed: use 1-60 letters, digits, '-', '_' or '.'")
