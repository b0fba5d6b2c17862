"""What an app needs to call a deployed reranker, and the same thing written for each consumer.

`describe` finds the base URL, the rerank URL, the model uid and a key; `recipe` turns them into a
paste-ready block for one consumer. Secrets stay out of everything that does not need them: code
recipes read the key from $XRERANK_API_KEY, and only the formats whose purpose is to hold it
(env lines, the Dify and RAGFlow forms) or --show-key print it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from xrerank.defaults import API_KEY_ENV
from xrerank.errors import BadInput
from xrerank.integrations.connection import Connection
from xrerank.integrations.snippets import HAYSTACK_KEY, KEY, SNIPPETS, through_route

if TYPE_CHECKING:
    from xrerank.xinference.session import Session

ENV_ENDPOINT, ENV_MODEL = "XRERANK_ENDPOINT", "XRERANK_MODEL_UID"


def describe(session: Session, model_uid: str, new_key: str | None = None, key_name: str | None = None,
             app_base_url: str | None = None, v2_url: str | None = None) -> Connection:  # fmt: skip
    """The connection for `model_uid`: a new app key (`new_key`), an existing one revealed (`key_name`),
    the key xrerank was given, or none when the server runs without auth."""
    from xrerank.xinference.keys import app_key, check_app_name, create_app_key

    # `is not None`: an empty name (a script's unset $APP) is refused by the name check, never taken
    # as "no app given", which would hand out xrerank's own key.
    if new_key is not None and key_name is not None:
        raise BadInput("give --new-key APP or --key APP, not both")
    for app in (new_key, key_name):
        if app is not None:
            check_app_name(app)
    server = session.server
    if model_uid not in {model.uid for model in server.models()}:
        raise BadInput(f"{model_uid} is not running on {server.endpoint}; deploy it first")
    given = server.credentials
    if new_key is not None:
        key, secret = create_app_key(server, new_key, (model_uid,))
        found = (secret, key.name, f"a new key for the app {new_key}, limited to {model_uid}")
    elif key_name is not None:
        matches = [k for k in app_key(server, key_name) if k.enabled]
        if not matches:
            raise BadInput(f"no enabled key named {key_name!r}; see `xrerank keys list`, or create one with --new-key")
        usable = [k for k in matches if not k.models or model_uid in k.models]
        if not usable:
            raise BadInput(
                f"{key_name}'s key may use only {', '.join(matches[0].models)}, not {model_uid}; "
                f"create another with --new-key"
            )
        found = (server.reveal_key(usable[0].id), usable[0].name, f"the key of the app {key_name}")
    elif given.api_key:
        found = (given.api_key, None, "the API key xrerank was given (shared: --new-key APP gives each app its own)")
    elif not server.auth_enabled():
        found = (None, None, "none needed: the server runs without auth")
    else:
        raise BadInput(
            "give an app its own key: --new-key APP creates one (limited to this model), --key APP shows an "
            "existing one; or pass --api-key"
        )
    base = server.endpoint
    return Connection(base, app_base_url or base, model_uid, found[0], found[1], found[2], v2_url)


def _env_lines(connection: Connection) -> list[str]:
    lines = [f"{ENV_ENDPOINT}={connection.app_base_url}", f"{ENV_MODEL}={connection.model_uid}"]
    return lines + ([f"{API_KEY_ENV}={connection.key}"] if connection.key else [])


def _env(connection: Connection, show_key: bool) -> str:
    return "\n".join(f"export {shlex.quote(line)}" for line in _env_lines(connection))


def _dotenv(connection: Connection, show_key: bool) -> str:
    """NAME=value lines, unquoted: what GitHub Actions' $GITHUB_ENV and GitLab's dotenv reports read."""
    return "\n".join(_env_lines(connection))


def _dify(connection: Connection, show_key: bool) -> str:
    return "\n".join([
        "Dify: Settings > Model Provider > Xinference > Add Model, type Rerank:",
        "  Model Name     any label, e.g. " + connection.model_uid,
        f"  Server URL     {connection.app_base_url}          (no /v1)",
        f"  Model UID      {connection.model_uid}",
        f"  API Key        {connection.key or '(leave empty: no auth)'}",
    ])  # fmt: skip


def _ragflow(connection: Connection, show_key: bool) -> str:
    return "\n".join([
        "RAGFlow: Model providers > Xinference > Add model, type rerank:",
        f"  Model name     {connection.model_uid}",
        f"  Base url       {connection.app_base_url}          (RAGFlow adds /v1/rerank)",
        f"  API-Key        {connection.key or '(leave empty: no auth)'}",
        "  Without the key an auth-on Xinference answers 401 and RAGFlow scores every document 0.0.",
    ])  # fmt: skip


def _text(connection: Connection, show_key: bool) -> str:
    elsewhere = connection.app_base_url != connection.base_url
    lines = [
        f"base URL     {connection.base_url}",
        *([f"from other hosts and containers: {connection.app_base_url}"] if elsewhere else []),
        f"rerank URL   {connection.app_base_url}/v1/rerank   (POST, Cohere-style body)",
        f"model uid    {connection.model_uid}",
        f"API key      {connection.shown_key(show_key) or 'none needed'}"
        + (f"   ({connection.key_note})" if connection.key else ""),
        f"Cohere v2    {connection.v2_url or 'no route runs (see: xrerank gateway --help)'}"
        + ("   (base_url for ClientV2, langchain-cohere, llama-index, Haystack)" if connection.v2_url else ""),
        "",
        f"paste-ready: xrerank connect --format {'|'.join(form for form in RECIPES if form != 'text')}",
    ]
    return "\n".join(lines)


def _code(program: Callable[[Connection], str]) -> tuple[bool, Callable[..., str]]:
    return False, lambda connection, show_key: program(connection)


# format -> (prints the key itself, the renderer). Code recipes read $XRERANK_API_KEY instead.
RECIPES: dict[str, tuple[bool, Callable[..., str]]] = {
    "text": (False, _text),
    "env": (True, _env),
    "dotenv": (True, _dotenv),
    **{form: _code(program) for form, program in SNIPPETS.items()},
    "dify": (True, _dify),
    "ragflow": (True, _ragflow),
}


def recipe(connection: Connection, form: str, show_key: bool) -> str:
    if through_route(form, connection) and connection.v2_url is None:
        raise BadInput(
            f"--format {form}: this consumer needs xrerank's compatibility route (Xinference answers only "
            "/v1/rerank with a Bearer key), and none runs beside this server; the embedded server starts one, "
            "or run `xrerank gateway --port PORT` beside yours and pass its URL with --v2-url"
        )
    text = RECIPES[form][1](connection, show_key)
    if show_key and connection.key and not RECIPES[form][0]:
        # --show-key: the code recipes carry the key itself where they would read $XRERANK_API_KEY.
        text = text.replace(KEY, repr(connection.key)).replace(HAYSTACK_KEY, f"Secret.from_token({connection.key!r})")
        text = text.replace(f"${API_KEY_ENV}", connection.key)
    return text


def prints_key(form: str, connection: Connection, show_key: bool) -> bool:
    return connection.key is not None and (RECIPES[form][0] or show_key)
