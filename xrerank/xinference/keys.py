"""API keys: one per app, and the one xrerank keeps for its own rerank traffic.

Keys go through Xinference 4.1's key API (/v1/admin/keys), which only a user login may call. A
key may query and rerank, nothing else; it can be limited to named model uids. Revoking a key
disables it rather than deleting it: an app still sending a disabled key is refused per key,
while an unknown (deleted) key counts towards banning the app's whole address.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xrerank.client.http import Refused
from xrerank.errors import BadInput
from xrerank.files import file_name, private_directory, read_json, write_json_atomically
from xrerank.names import validate_model_uid
from xrerank.xinference.server import ApiKey, Xinference

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
        if cached and _still_valid(cached, keys):
            return cached["key"]
        name = data_plane_key_name(server)
        existing = _current(keys, name)
        if existing is not None:  # an admin may read a key back (keys:manage); others are refused here
            key, secret = existing, server.reveal_key(existing.id)
        else:
            key, secret = server.create_key(name)
    except Refused:
        warn(
            f"note: {server.credentials.username!r} may not create (or read back) API keys, so rerank traffic "
            "uses the login token, which Xinference 4.1 checks slowly under load; give --api-key for full speed"
        )
        return None
    write_json_atomically(path, {"id": key.id, "name": key.name, "key": secret}, mode=0o600)
    return secret


def _still_valid(cached: dict, keys: list[ApiKey]) -> bool:
    """The cached key is on the server, enabled, and its secret is that key's (a hand-edited or
    half-written cache would send a wrong key, and each refusal counts towards a ban)."""
    secret = cached.get("key")
    return isinstance(secret, str) and any(
        k.id == cached.get("id") and k.enabled and k.prefix and secret.startswith(k.prefix) for k in keys
    )


def data_plane_key_name(server: Xinference) -> str:
    user, host = (_plain(text)[:40] for text in (server.credentials.username or "", socket.gethostname()))
    return f"{DATA_PLANE_PREFIX}{user}@{host}"


def _plain(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)


PRUNE_MARK = "disabled by xrerank keys prune at "
PRUNE_GRACE_SECONDS = 3600.0


@dataclass
class Pruned:
    disabled: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def prune_data_plane_keys(server: Xinference, home: Path, now: float | None = None) -> Pruned:
    """Retire xrerank's own data-plane keys but the one this login uses now: those of earlier xrerank
    versions (a new one per fresh $XRERANK_HOME) and duplicates. A key is disabled first, so a client
    still sending it is refused per key instead of getting its address banned, and deleted by a prune
    an hour or more later. Another machine's or user's current key is left alone."""
    now = time.time() if now is None else now
    if not server.credentials.username:
        raise BadInput("keys prune needs a user login (--username/--password): only a login may list and delete keys")
    cached = read_json(_cache(home, server)) or {}
    current = data_plane_key_name(server)
    keys = [k for k in server.api_keys() if k.name.startswith(DATA_PLANE_PREFIX)]
    in_use = next((k for k in keys if k.id == cached.get("id")), None) or _current(keys, current)
    pruned = Pruned()
    for key in keys:
        if key is in_use or (key.enabled and key.name != current and "@" in key.name):
            continue  # in use here, or another machine's or user's current key
        if key.enabled:
            server.disable_key(key.id, f"{key.name}.pruned-{key.id}", f"{PRUNE_MARK}{now:.0f}")
            pruned.disabled.append(key.name)
        elif _pruned_before(key, now - PRUNE_GRACE_SECONDS):
            server.delete_key(key.id)
            pruned.deleted.append(key.name)
    return pruned


def _pruned_before(key: ApiKey, moment: float) -> bool:
    stamp = key.description.removeprefix(PRUNE_MARK)
    return key.description.startswith(PRUNE_MARK) and stamp.isdigit() and float(stamp) <= moment


def _current(keys: list[ApiKey], name: str) -> ApiKey | None:
    return next((k for k in keys if k.name.lower() == name.lower() and k.enabled and not k.models), None)


def _cache(home: Path, server: Xinference) -> Path:
    endpoint = server.endpoint.split("://", 1)[-1]
    return private_directory(home / "keys") / file_name(server.credentials.username or "", endpoint, suffix=".json")


def create_app_key(server: Xinference, app: str, model_uids: tuple[str, ...] = ()) -> tuple[ApiKey, str]:
    """A key for one app (named `app-<NAME>` on the server), limited to `model_uids` when given."""
    check_app_name(app)
    for uid in model_uids:
        validate_model_uid(uid)  # a uid no model can have would make a key that opens nothing
    model_uids = tuple(dict.fromkeys(model_uids))  # the server stores each once, and fails on a repeat
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
    name = (APP_PREFIX + app).lower()  # the server compares key names without case
    return [key for key in server.api_keys() if key.name.lower() == name]


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


_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}")
_RETIRED = re.compile(r"\.(revoked|pruned)-\d+$", re.IGNORECASE)


def check_app_name(app: str) -> None:
    shown = app if len(app) <= 40 else f"{app[:37]}... ({len(app)} characters)"
    if not _APP_NAME.fullmatch(app):
        raise BadInput(
            f"app name {shown!r} is not allowed: use 1-60 ASCII letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    if _RETIRED.search(app):
        raise BadInput(f"app name {shown!r} is not allowed: names ending in .revoked-N are xrerank's own")
