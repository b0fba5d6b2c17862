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
from .names import validate_model_uid
from .server import ApiKey, Xinference

DATA_PLANE_PREFIX = "xrerank-data-"
APP_PREFIX = "app-"


def data_plane_key(server: Xinference, home: Path, warn: Callable[[str], None]) -> str | None:
    """The API key xrerank uses for its own rerank traffic with this user's login: one per user and
    machine, under a stable name, so a CI job with a fresh $XRERANK_HOME finds the key an earlier job
    made instead of adding one more. Kept (0600) in $XRERANK_HOME/keys; None, with one warning, when
    this user may not create keys."""
    path = _cache(home, server)
    cached = read_json(path)  # a damaged cache is rebuilt from the server
    try:
        keys = server.api_keys()
        if cached and any(k.id == cached.get("id") and k.enabled for k in keys):
            return cached["key"]
        name = data_plane_key_name(server)
        existing = _current(keys, name)
        key, secret = (existing, _revealed(server, existing.id)) if existing is not None else (None, None)
        if key is None or secret is None:
            key, secret = server.create_key(name)
    except Refused:
        warn(
            f"note: {server.credentials.username!r} may not create API keys, so rerank traffic uses the login "
            "token, which Xinference 4.1 checks slowly under load; give --api-key for full speed"
        )
        return None
    write_json_atomically(path, {"id": key.id, "name": key.name, "key": secret}, mode=0o600)
    return secret


def data_plane_key_name(server: Xinference) -> str:
    user = "".join(c if c.isalnum() or c in "-_." else "_" for c in server.credentials.username or "")
    return f"{DATA_PLANE_PREFIX}{user[:40]}@{socket.gethostname()[:60]}"


def prune_data_plane_keys(server: Xinference, home: Path) -> list[str]:
    """Delete xrerank's own data-plane keys but the one this login uses now: those of earlier
    xrerank versions (a new one per fresh $XRERANK_HOME) and duplicates. Returns the names deleted.

    An xrerank on another machine whose key goes finds or makes its own again on its next command."""
    cached = read_json(_cache(home, server)) or {}
    current = data_plane_key_name(server)
    keys = [k for k in server.api_keys() if k.name.startswith(DATA_PLANE_PREFIX)]
    in_use = next((k for k in keys if k.id == cached.get("id")), None) or _current(keys, current)
    deleted = []
    for key in keys:
        if key is in_use or (key.name != current and "@" in key.name):
            continue  # in use here, or another machine's or user's current key
        server.delete_key(key.id)
        deleted.append(key.name)
    return deleted


def _current(keys: list[ApiKey], name: str) -> ApiKey | None:
    return next((k for k in keys if k.name == name and k.enabled and not k.models), None)


def _revealed(server: Xinference, key_id: int) -> str | None:
    """A key's secret, or None where this user may create keys but not read them back."""
    try:
        return server.reveal_key(key_id)
    except Refused:
        return None


def _cache(home: Path, server: Xinference) -> Path:
    endpoint = server.endpoint.split("://", 1)[-1]
    return private_directory(home / "keys") / file_name(server.credentials.username or "", endpoint, suffix=".json")


def create_app_key(server: Xinference, app: str, model_uids: tuple[str, ...] = ()) -> tuple[ApiKey, str]:
    """A key for one app (named `app-<NAME>` on the server), limited to `model_uids` when given."""
    check_app_name(app)
    for uid in model_uids:
        validate_model_uid(uid)  # a uid no model can have would make a key that opens nothing
    found = app_key(server, app)
    if any(key.enabled for key in found):
        raise BadInput(f"a key named {app!r} exists already; revoke it first or choose another name")
    for key in found:  # revoked before revoking renamed keys: free the name, keep the key refused
        server.disable_key(key.id, _retired_name(key))
    return server.create_key(APP_PREFIX + app, model_uids)


def app_keys(server: Xinference) -> list[ApiKey]:
    return [key for key in server.api_keys() if key.name.startswith(APP_PREFIX)]


def app_key(server: Xinference, app: str) -> list[ApiKey]:
    """The keys named for `app` (one, unless made outside xrerank), enabled or not."""
    check_app_name(app)
    return [key for key in server.api_keys() if key.name == APP_PREFIX + app]


def revoke_app_key(server: Xinference, app: str) -> str:
    """Disable the app's key at once: "revoked", or "absent" when there is none (or it is off already)."""
    found = app_key(server, app)
    if not found or not any(k.enabled for k in found):
        return "absent"
    for key in found:
        server.disable_key(key.id, _retired_name(key))
    return "revoked"


def _retired_name(key: ApiKey) -> str:
    """A revoked key keeps existing (an app still sending it is refused per key, not banned), under a
    name of its own, so the app's name can be given to a new key."""
    return f"{key.name}.revoked-{key.id}"


def check_app_name(app: str) -> None:
    if not app or len(app) > 60 or not all(c.isalnum() or c in "-_." for c in app):
        raise BadInput(f"app name {app[:60]!r} is not allowed: use 1-60 letters, digits, '-', '_' or '.'")
