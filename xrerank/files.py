"""Small file helpers shared by the modules that keep state on disk: atomic JSON, private
directories, file names built from validated parts, and inter-process locks with a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

from .errors import BadInput, TimedOut


def xrerank_home() -> Path:
    """Where xrerank keeps its state: $XRERANK_HOME, default ~/.xrerank."""
    return Path(os.environ.get("XRERANK_HOME") or Path.home() / ".xrerank").expanduser()


def write_json_atomically(path: Path, document: dict, mode: int = 0o644) -> None:
    """Replace `path` whole: a reader sees the old document or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing or unreadable."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def private_directory(path: Path) -> Path:
    """`path`, created if needed and readable by its owner only (secrets and server state live there)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def file_name(*parts: str, suffix: str = "") -> str:
    """A single file name made of `parts`: anything but letters, digits, '-', '_' and '.' is escaped,
    so no part can reach another directory."""
    quoted = [quote(part, safe="-_.") for part in parts]
    if any(part in ("", ".", "..") for part in quoted):
        raise BadInput(f"cannot build a file name from {parts!r}")
    return "@".join(quoted) + suffix


@contextlib.contextmanager
def held_lock(path: Path, deadline: float, what: str, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the inter-process lock at `path` (waiting until `deadline`, a time.monotonic() value).

    Two CI jobs deploying one file serialise here; the second then finds everything done."""
    from filelock import FileLock, Timeout

    private_directory(path.parent)
    lock = FileLock(str(path))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if waiting is not None:
                waiting(f"waiting for another xrerank process working on {what}")
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
    except Timeout:
        raise TimedOut(
            f"{what} is locked by another xrerank process (lock {path}); it did not finish before the deadline"
        ) from None
    try:
        yield
    finally:
        lock.release()
