"""Library exceptions. Each carries the exit code the CLI turns it into."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes (README, "Exit codes"), the same for every command."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    UNREACHABLE = 3
    TIMED_OUT = 4
    INTERRUPTED = 130


class XrerankError(Exception):
    """A failure with a one-line message: what failed, why, what to do next."""

    exit_code = ExitCode.FAILED


class BadInput(XrerankError):
    """The user's input is wrong; nothing was sent to the server."""

    exit_code = ExitCode.BAD_INPUT


class Unreachable(XrerankError):
    """The server does not answer, is not Xinference, or refuses our credentials."""

    exit_code = ExitCode.UNREACHABLE


class TimedOut(XrerankError):
    """A wait reached its deadline."""

    exit_code = ExitCode.TIMED_OUT


class ServerError(XrerankError):
    """The server answered and refused the request; the message is the server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# What Xinference's answer says when it sent the request on to a worker that has died: the
# supervisor keeps such a worker on its books for ~20 s, until it notices.
WORKER_GONE = ("Connect call failed", "Connection refused", "[Errno 111]")


def worker_lost(error: ServerError) -> bool:
    return any(marker in str(error) for marker in WORKER_GONE)


class Conflict(XrerankError):
    """What the server has differs from what was asked, and changing it needs --replace."""


SERVER_SIDE = ("torch", "transformers", "sentence_transformers")  # the `server` extra's model stack


def require_server_side(what: str) -> None:
    """Loading a model needs the server extra; a client-only install says so in one line (exit 2)."""
    import importlib.util

    missing = [name for name in SERVER_SIDE if importlib.util.find_spec(name) is None]
    if missing:
        raise server_side_needed(what, missing)


def server_side_needed(what: str, missing: list[str]) -> BadInput:
    return BadInput(
        f"{what} needs the server side, which this install lacks ({', '.join(missing)} missing): "
        "pip install 'xrerank[server]' (scripts/install.sh chooses the torch build)"
    )
