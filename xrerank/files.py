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

from xrerank.errors import BadInput, TimedOut, XrerankError


def xrerank_home() -> Path:
    """Where xrerank keeps its state: $XRERANK_HOME, default ~/.xrerank."""
    return Path(os.environ.get("XRERANK_HOME") or Path.home() / ".xrerank").expanduser()


def write_json_atomically(path: Path, document: dict, mode: int = 0o644) -> None:
    """Replace `path` whole, durably: a reader sees the old document or the new one, never half of
    one, also after a power cut (the data reaches the disk before the rename, the rename after)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # a system without directory handles (Windows): the rename is what it offers
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class DamagedState(XrerankError):
    """A state file xrerank wrote is there but is not a JSON object (cut short by a crash, or edited)."""


def read_json(path: Path, strict: bool = False) -> dict | None:
    """The JSON object in `path`; None when it is missing. A damaged file is None too, or with
    `strict` (for files nothing can be rebuilt from) a DamagedState naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return _damaged(path, str(exc), strict)
    try:
        document = json.loads(text)
    except ValueError as exc:
        return _damaged(path, f"not valid JSON ({exc})", strict)
    if not isinstance(document, dict):
        return _damaged(path, "not a JSON object", strict)
    return document


def _damaged(path: Path, why: str, strict: bool) -> None:
    if strict:
        raise DamagedState(f"{path} is damaged: {why}; it was cut short by a crash or edited by hand")
    return None


def private_directory(path: Path) -> Path:
    """`path`, created if needed and readable by its owner only (secrets and server state live there)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    except OSError as exc:  # a file in its place, or in the place of a parent; no permission
        raise BadInput(f"cannot use {path} as xrerank's directory: {exc.strerror or exc}; check XRERANK_HOME") from None
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


@contextlib.contextmanager
def held_shared_lock(
    path: Path, deadline: float, what: str, exclusive: bool, waiting: Callable[[str], None] | None = None
) -> Iterator[None]:
    """A readers-writer lock at `path` (flock): many holders at once share it, an exclusive holder is
    alone; waiting until `deadline`, a time.monotonic() value."""
    import fcntl

    private_directory(path.parent)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        said = False
        while True:
            try:
                fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimedOut(
                        f"{what} is locked by another xrerank process (lock {path}); it did not finish before "
                        "the deadline"
                    ) from None
                if waiting is not None and not said:
                    waiting(f"waiting for another xrerank process working on {what}")
                    said = True
                time.sleep(0.2)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
