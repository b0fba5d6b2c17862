"""What every command shares: the group and its connection options, the error boundary, the
options several commands take, and the way results are printed."""

from __future__ import annotations

import time
from pathlib import Path

import click

from xrerank.cli.render import (
    emit_json,
)
from xrerank.defaults import API_KEY_ENV, DEFAULT_ENDPOINT
from xrerank.errors import BadInput, ExitCode, XrerankError


class Context:
    """What the group's options give every command."""

    def __init__(self, options, debug: bool) -> None:
        self.options = options
        self.debug = debug

    def session(self, deployment: object = None):
        from xrerank.xinference.session import open_session

        return open_session(self.options, deployment, warn=progress)

    def target(self, file: Path):
        from xrerank.deploy.target import load_target
        from xrerank.files import xrerank_home

        target = load_target(file, xrerank_home())
        return target, self.session(target.deployment)


class ErrorBoundary(click.Group):
    """Turns library errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except XrerankError as exc:
            if isinstance(ctx.obj, Context) and ctx.obj.debug:
                import traceback

                traceback.print_exc()  # and still the documented exit code: scripts read it
            click.echo(f"error: {one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: run the same command again to resume", err=True)
            ctx.exit(ExitCode.INTERRUPTED)


def one_line(text: str) -> str:
    return " ".join(text.split()) or "(no reason given)"


def progress(message: str) -> None:
    click.echo(message, err=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


def checked(check):
    """A click callback running one of names.py's checks (None passes: the option was not given)."""

    def callback(context: click.Context, parameter: click.Parameter, value):
        try:
            return value if value is None else check(value)
        except BadInput as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def valid_uid(value: str) -> str:
    from xrerank.names import validate_model_uid

    return validate_model_uid(value)


def valid_name(value: str) -> str:
    from xrerank.names import validate_model_name

    return validate_model_name(value, builtin_ok=True)  # status, launch and unregister may name a built-in


def valid_url(value: str) -> str:
    from xrerank.client.http import parse_endpoint

    return parse_endpoint(value)


def caller_levels(value: str) -> tuple[int, ...]:
    """--sweep 1,4,16,48: numbers of callers, each 1 to 256, at most 12 of them."""
    try:
        levels = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise BadInput(f"{value!r} is not a list of numbers of callers; e.g. 1,4,16,48") from None
    if not levels or len(levels) > 12 or not all(1 <= level <= 256 for level in levels):
        raise BadInput(f"{value!r}: give 1 to 12 numbers of callers, each from 1 to 256; e.g. 1,4,16,48")
    return levels


def valid_uids(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(valid_uid(value) for value in values)


def wait_option(default: float, what: str):
    """--wait SECONDS, a deadline; --timeout is its hidden alias for one release (it meant HTTP on the group)."""

    def decorate(function):
        function = click.option(
            "--timeout", "legacy_wait", type=click.FloatRange(min=1), hidden=True, help="Old name of --wait."
        )(function)
        return click.option(
            "--wait",
            "wait_for",
            type=click.FloatRange(min=1),
            default=default,
            show_default=True,
            help=f"Seconds to wait {what} before giving up (exit 4).",
        )(function)

    return decorate


def deadline_of(wait_for: float, legacy_wait: float | None) -> float:
    import math

    if legacy_wait is not None:
        progress("note: --timeout on this command is now --wait; --timeout will be removed in the next release")
        wait_for = legacy_wait
    if not math.isfinite(wait_for):
        raise BadInput(f"--wait {wait_for}: give a number of seconds")
    return time.monotonic() + wait_for


def workload_options(function):
    """What bench and tune send: callers at once, documents per request, their length, a warm-up."""
    function = click.option(
        "--warmup", type=click.FloatRange(0, 600), default=3, show_default=True,
        help="Seconds of load before measuring (excluded from the figures; a fresh GPU replica is slow at first).",
    )(function)  # fmt: skip
    function = click.option(
        "--doc-tokens", type=click.IntRange(1, 8192), default=64, show_default=True,
        help="Document length in common English words (about a token each for a real reranker's vocabulary).",
    )(function)  # fmt: skip
    function = click.option(
        "--docs", type=click.IntRange(1, 10_000), default=16, show_default=True, help="Documents per request."
    )(function)
    return click.option(
        "--concurrency", type=click.IntRange(1, 256), default=4, show_default=True, help="Callers at once."
    )(function)


def demo_family_names() -> list[str]:
    from xrerank.families import demo_families

    return [family.name for family in demo_families()]


@click.group(cls=ErrorBoundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xrerank")
@click.option(
    "--endpoint",
    envvar=["XRERANK_ENDPOINT", "XINFERENCE_ENDPOINT"],
    show_envvar=True,
    help=f"Xinference REST API (default {DEFAULT_ENDPOINT}, or the deployment file's).",
)
@click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True, help="API key (query and rerank only).")
@click.option("--username", envvar="XRERANK_USERNAME", show_envvar=True, help="User for admin operations.")
@click.option("--password", envvar="XRERANK_PASSWORD", show_envvar=True, help="That user's password.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    envvar="XRERANK_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="Seconds to wait for each HTTP answer.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx, endpoint, api_key, username, password, timeout, debug):
    """Deploy cross-encoder rerankers on Xinference and prove they answer correctly.

    \b
    Start here (no model hub needed):
        xrerank up --demo

    Exit codes: 0 ok or already so, 1 failed, 2 bad input, 3 server unreachable or
    unauthorized, 4 timed out, 130 interrupted.
    """
    from xrerank.xinference.session import Options

    ctx.obj = Context(Options(endpoint, api_key, username, password, timeout), debug)


def stopped(state, as_json: bool) -> None:
    """What `stop` did: stopped, not running, or stale with the reason (nothing was signalled)."""
    done({"outcome": state.state, "detail": state.detail or None}, as_json, state_line(state))


def state_line(state) -> str:
    return state.state + (f": {state.detail}" if state.detail else "")


def done(document: dict, as_json: bool, text: str) -> None:
    emit_json(document) if as_json else click.echo(text)


def main() -> None:
    cli(prog_name="xrerank")
