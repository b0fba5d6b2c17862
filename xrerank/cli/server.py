"""The embedded local server: server start/stop/status/unban, up and down."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from xrerank.cli.base import (
    cli,
    deadline_of,
    demo_family_names,
    done,
    json_option,
    progress,
    state_line,
    stopped,
    valid_url,
    wait_option,
)
from xrerank.cli.render import (
    emit_json,
    family_text,
    results_text,
)
from xrerank.errors import ExitCode


def _server_dir(context: click.Context, parameter: click.Parameter, home: Path | None) -> Path:
    from xrerank.xinference.local import default_server_dir

    return home or default_server_dir()


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_server_dir,
    help="Server directory (default $XRERANK_HOME/server).",
)
port_option = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9997,
    envvar="XRERANK_PORT",
    show_envvar=True,
    show_default=True,
    help="The embedded server's port (a CI runner shared with other jobs may need another).",
)
host_option = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 serves apps on other hosts and in containers (auth stays on).",
)


v2_port_option = click.option(
    "--v2-port",
    type=click.IntRange(0, 65535),
    envvar="XRERANK_V2_PORT",
    show_envvar=True,
    help="The Cohere-v2 route's port (default: --port + 1 when free, else any; 0: no route).",
)


@cli.group("server")
def server_group():
    """Run an embedded Xinference (its home, log, pid and credentials in one private directory)."""


@server_group.command("start")
@port_option
@host_option
@home_option
@click.option("--no-auth", is_flag=True, help="Turn Xinference's auth off (only on a loopback --host).")
@click.option(
    "--trust-remote-code", is_flag=True,
    help="Let models run the code their repositories ship (XINFERENCE_TRUST_REMOTE_CODE=1).",
)  # fmt: skip
@v2_port_option
@wait_option(180, "for the server to answer")
@json_option
def server_start(port, host, home, no_auth, trust_remote_code, v2_port, wait_for, legacy_wait, as_json):
    """Start the server unless it runs; with auth on, create its admin and API key.

    \b
        xrerank server start --port 9997
    """
    from xrerank.xinference.local import start

    deadline = deadline_of(wait_for, legacy_wait)
    running, started = start(home, port, not no_auth, deadline - time.monotonic(), host, trust_remote_code, v2_port)
    _server_done(running, "started" if started else "already running", as_json)


@server_group.command("stop")
@home_option
@json_option
def server_stop(home, as_json):
    """Stop the server and its model processes (idempotent; a stale record is dropped, nothing signalled).

    \b
        xrerank server stop
    """
    from xrerank.xinference.local import stop

    stopped(stop(home), as_json)


@server_group.command("status")
@home_option
@json_option
def server_status(home, as_json):
    """Is the embedded server running and answering? Exit 0 only when it is.

    \b
        xrerank server status --json
    """
    from xrerank.xinference.local import inspect_server

    found = inspect_server(home)
    if found.state == "running" and found.server is not None:
        _server_done(found.server, "running", as_json)
        return
    document = {"outcome": found.state, "running": False, "detail": found.detail or None}
    done(document, as_json, state_line(found))
    sys.exit(ExitCode.FAILED)


@server_group.command("unban")
@home_option
@json_option
def server_unban(home, as_json):
    """Lift the address bans Xinference's rate limiter set on the embedded server.

    \b
        xrerank server unban
    """
    from xrerank.xinference.local import unban

    lifted = unban(home)
    done({"unbanned": lifted}, as_json, f"lifted {lifted} ban(s)")


def _server_done(running, outcome: str, as_json: bool) -> None:
    from xrerank.xinference.gateway import lost
    from xrerank.xinference.gateway import running as route_of
    from xrerank.xinference.local import LOG_FILE

    route = route_of(running.directory)
    gone = route is None and lost(running.directory)

    document = {
        "outcome": outcome,
        "running": True,
        "endpoint": running.endpoint,
        "app_endpoint": running.advertised_endpoint,
        "host": running.host,
        "pid": running.pid,
        "auth": running.auth,
        "trust_remote_code": running.trust_remote_code,
        "log": str(running.directory / LOG_FILE),
        "cohere_v2_url": route.advertised_url if route else None,
        "cohere_v2_route": "running" if route else "not running" if gone else "off",
    }
    where = running.endpoint
    if running.advertised_endpoint != running.endpoint:
        where += f", apps elsewhere: {running.advertised_endpoint}"
    trusting = ", repositories' code runs" if running.trust_remote_code else ""
    routed = f"; Cohere-v2 route: {route.advertised_url}" if route else ""
    if gone:
        routed = "; the Cohere-v2 route is not running (`xrerank server start` starts it again)"
    auth = "on" if running.auth else "off"
    done(document, as_json, f"{outcome}: {where} (pid {running.pid}, auth {auth}{trusting}){routed}")


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="The port to serve the route on.")
@host_option
def gateway(port, host):
    """Serve the Cohere-v2 route beside an Xinference xrerank did not start, until Ctrl-C.

    It takes POST /v2/rerank (cohere.ClientV2, langchain-cohere, llama-index's and Haystack's
    Cohere rankers) and /v1/rerank with the key as Basic auth (llama-index's XinferenceRerank),
    and forwards both to the --endpoint's /v1/rerank; Xinference checks the key. The embedded
    server runs one of its own (`server start --v2-port`).

    \b
        xrerank --endpoint http://10.0.0.5:9997 gateway --port 9998
    """
    from xrerank.errors import BadInput
    from xrerank.xinference.gateway import serve
    from xrerank.xinference.local import check_host, port_in_use

    context = click.get_current_context().find_root().obj
    if context.options.endpoint is None:
        raise click.UsageError("give the Xinference it fronts: xrerank --endpoint URL gateway --port PORT")
    upstream, host = valid_url(context.options.endpoint), check_host(host, auth=True)
    if port_in_use(port):
        raise BadInput(f"port {port} is in use by another program; choose another with --port")
    progress(f"serving the Cohere-v2 route on http://{host}:{port}, forwarding to {upstream}/v1/rerank")
    serve(upstream, host, port)


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--demo", is_flag=True, help="Deploy the offline demo model (configs/demo.yaml).")
@click.option("--family", type=click.Choice(demo_family_names()), help="With --demo: this family's tiny model instead.")
@port_option
@host_option
@v2_port_option
@wait_option(900, "for the server, the download and the deploy")
@json_option
@click.pass_obj
def up(context, file, demo, family, port, host, v2_port, wait_for, legacy_wait, as_json):
    """Start the embedded server if none answers, deploy, verify, and show a sample ranking.

    Default: configs/bge-reranker-v2-m3-cpu.yaml (downloads ~2.3 GB from ModelScope);
    --demo deploys a tiny random model and needs no network.

    \b
        xrerank up --demo
    """
    from xrerank.deploy.up import SAMPLE_QUERY
    from xrerank.deploy.up import up as run

    result = run(context.options, file, demo, deadline_of(wait_for, legacy_wait), port, host, progress, family,
                 v2_port)  # fmt: skip
    if as_json:
        emit_json(result.as_dict())
        return
    deployed = result.deployed
    click.echo(f"deployed {deployed.uid} on {deployed.endpoint}" + ("" if deployed.changed else " (unchanged)"))
    if deployed.family:
        click.echo(family_text(deployed.family))
    click.echo(f'sample ranking for "{SAMPLE_QUERY}":')
    click.echo(results_text(result.sample))
    if result.demo:
        from xrerank.weights.generated import DEMO_WARNING

        click.echo(f"note: {DEMO_WARNING}")
    click.echo(
        "next:\n"
        f"  xrerank connect --model-uid {deployed.uid}          # the URL, uid and key for your app\n"
        f'  xrerank rerank --model-uid {deployed.uid} "your query" "doc one" "doc two"\n'
        f"  xrerank status --model-uid {deployed.uid}\n"
        "  xrerank down"
    )


@cli.command()
@json_option
def down(as_json):
    """Stop the embedded server that `xrerank up` started (its registrations persist).

    \b
        xrerank down
    """
    from xrerank.xinference.local import default_server_dir, stop

    stopped(stop(default_server_dir()), as_json)
