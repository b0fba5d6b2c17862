"""Handing the service to apps: connect, and the app keys."""

from __future__ import annotations

from pathlib import Path

import click

from xrerank.cli.base import (
    checked,
    cli,
    done,
    json_option,
    progress,
    valid_uid,
    valid_uids,
    valid_url,
)
from xrerank.cli.render import (
    emit_json,
)
from xrerank.defaults import API_KEY_ENV, CONNECT_FORMATS


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model-uid",
    callback=checked(valid_uid),
    help="The deployed model (default: FILE's, else the only rerank model running).",
)
@click.option(
    "--format", "form", type=click.Choice(CONNECT_FORMATS),
    default="text", show_default=True, help="What to print: the facts, env lines, or a paste-ready recipe.",
)  # fmt: skip
@click.option("--new-key", metavar="APP", help="Create a key for this app (limited to the model) and use it.")
@click.option("--key", "key_name", metavar="APP", help="Use the key created before for this app.")
@click.option("--show-key", is_flag=True, help="Print the key itself where the format would hide it.")
@click.option(
    "--v2-url", metavar="URL", callback=checked(valid_url),
    help="The Cohere-v2 route's URL, for a server xrerank did not start (see `xrerank gateway`).",
)  # fmt: skip
@json_option
@click.pass_obj
def connect(context, file, model_uid, form, new_key, key_name, show_key, v2_url, as_json):
    """Print what an app needs to call the reranker: URLs, model uid, key, per consumer.

    Code recipes read the key from $XRERANK_API_KEY; `--format env` prints that line. A key is
    printed only by the formats made to hold it (env, dotenv, dify, ragflow) or with --show-key.

    \b
        eval "$(xrerank connect --new-key my-rag-app --format env)"; xrerank connect --format python
    """
    from xrerank.errors import BadInput
    from xrerank.integrations.recipes import describe, prints_key, recipe
    from xrerank.xinference.gateway import running

    if as_json and form != "text":
        raise BadInput(f"--json prints the facts as JSON; it has no --format {form}: give one or the other")
    from xrerank.xinference.local import embedded_at
    from xrerank.xinference.serving import rerank_target

    if file is not None:
        target, session = context.target(file)
        model_uid = model_uid or target.settings.uid
    else:
        session = context.session()
    model_uid = rerank_target(session.server, model_uid)[0]
    embedded = embedded_at(session.endpoint)
    app_url = embedded.advertised_endpoint if embedded is not None else None
    if v2_url is None and embedded is not None:
        route = running(embedded.directory)
        v2_url = route.advertised_url if route is not None else None
    connection = describe(session, model_uid, new_key, key_name, app_url, v2_url)
    if as_json:
        emit_json(connection.as_dict(show_key))
        return
    if prints_key(form, connection, show_key):
        progress(f"note: this output holds {connection.key_note}; keep it out of logs")
    elif new_key is not None:
        progress(f"note: a key for the app {new_key} was created; `xrerank connect --key {new_key} --format env` "
                 f"prints it as {API_KEY_ENV}, which the recipes read")  # fmt: skip
    click.echo(recipe(connection, form, show_key))


@cli.group("keys")
def keys_group():
    """API keys for apps: one per app, query and rerank only, revocable at once (a user login is needed)."""


@keys_group.command("create")
@click.argument("app")
@click.option(
    "--model-uid",
    "model_uids",
    multiple=True,
    callback=checked(valid_uids),
    help="Limit the key to this model (repeatable).",
)
@json_option
@click.pass_obj
def keys_create(context, app, model_uids, as_json):
    """Create a key for APP; it is printed once, here, and never again by xrerank.

    \b
        xrerank keys create my-rag-app --model-uid bge-reranker
    """
    from xrerank.xinference.keys import create_app_key

    key, secret = create_app_key(context.session().server, app, tuple(model_uids))
    progress("note: the key is shown once; store it now (or see it again with `xrerank connect --key APP`)")
    scope = ", ".join(key.models) or "every model"
    done({"app": app, "name": key.name, "prefix": key.prefix, "models": list(key.models), "api_key": secret},
          as_json, f"{secret}\n({key.name}: query and rerank on {scope})")  # fmt: skip


@keys_group.command("list")
@json_option
@click.pass_obj
def keys_list(context, as_json):
    """The apps' keys: name, prefix, on or revoked, the models they may use (never the secrets).

    \b
        xrerank keys list --json
    """
    from xrerank.xinference.keys import APP_PREFIX, app_keys

    keys = app_keys(context.session().server)
    rows = [{"app": k.name.removeprefix(APP_PREFIX), "prefix": k.prefix, "enabled": k.enabled,
             "models": list(k.models)} for k in keys]  # fmt: skip
    if as_json:
        emit_json({"keys": rows})
        return
    for row in rows:
        state = "on" if row["enabled"] else "revoked"
        click.echo(f"{row['app']:<24} {row['prefix']}…  {state:<8} {', '.join(row['models']) or 'every model'}")
    if not rows:
        click.echo("no app keys; create one with: xrerank keys create APP")


@keys_group.command("revoke")
@click.argument("app")
@json_option
@click.pass_obj
def keys_revoke(context, app, as_json):
    """Revoke APP's key at once (it is disabled: a client still sending it is refused per key and
    does not get its address banned).

    \b
        xrerank keys revoke my-rag-app
    """
    from xrerank.xinference.keys import revoke_app_key

    outcome = revoke_app_key(context.session().server, app)
    done({"app": app, "outcome": outcome}, as_json, f"{app}: {outcome}")


@keys_group.command("prune")
@json_option
@click.pass_obj
def keys_prune(context, as_json):
    """Retire the keys xrerank made for its own rerank traffic, but the one in use here.

    Earlier versions made one per fresh $XRERANK_HOME (a CI job: one per run). Each is disabled
    first (a client still sending it is refused, not banned) and deleted by a prune an hour or
    more later. Apps' keys and other machines' current keys are never touched.

    \b
        xrerank keys prune
    """
    from xrerank.xinference.keys import prune_data_plane_keys

    session = context.session()
    pruned = prune_data_plane_keys(session.server, session.home)
    lines = [f"disabled {len(pruned.disabled)} key(s) (a prune an hour or more from now deletes them)",
             *(f"  {name}" for name in pruned.disabled), f"deleted {len(pruned.deleted)} key(s)",
             *(f"  {name}" for name in pruned.deleted)]  # fmt: skip
    done({"disabled": pruned.disabled, "deleted": pruned.deleted}, as_json, "\n".join(lines))


# --- the embedded local server -------------------------------------------------------------------
