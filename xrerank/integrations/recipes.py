"""What an app needs to call a deployed reranker, and the same thing written for each consumer.

`describe` finds the base URL, the rerank URL, the model uid and a key; `recipe` turns them into a
paste-ready block for one consumer. Secrets stay out of everything that does not need them: code
recipes read the key from $XRERANK_API_KEY, and only the formats whose purpose is to hold it
(env lines, the Dify and RAGFlow forms) or --show-key print it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xrerank.defaults import API_KEY_ENV
from xrerank.errors import BadInput

if TYPE_CHECKING:
    from xrerank.xinference.session import Session

ENV_ENDPOINT, ENV_MODEL = "XRERANK_ENDPOINT", "XRERANK_MODEL_UID"
HIDDEN = "<hidden: add --show-key>"


@dataclass(frozen=True)
class Connection:
    base_url: str  # for apps on this machine
    app_base_url: str  # for apps on other machines and in containers (the same unless they differ)
    model_uid: str
    key: str | None
    key_name: str | None
    key_note: str  # where the key comes from, for people

    @property
    def rerank_url(self) -> str:
        return f"{self.base_url}/v1/rerank"

    def shown_key(self, show: bool) -> str | None:
        if self.key is None:
            return None
        return self.key if show else f"{self.key[:7]}…{HIDDEN}"

    def as_dict(self, show_key: bool) -> dict:
        return {
            "base_url": self.base_url,
            "app_base_url": self.app_base_url,
            "rerank_url": self.rerank_url,
            "model_uid": self.model_uid,
            "api_key": self.shown_key(show_key),
            "api_key_name": self.key_name,
            "api_key_from": self.key_note,
        }


def describe(session: Session, model_uid: str, new_key: str | None = None, key_name: str | None = None,
             app_base_url: str | None = None) -> Connection:  # fmt: skip
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
        found = (secret, key.name, f"the key created for {new_key}, limited to {model_uid}")
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
        found = (server.reveal_key(usable[0].id), usable[0].name, f"{key_name}'s key")
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
    return Connection(base, app_base_url or base, model_uid, found[0], found[1], found[2])


def _python(connection: Connection) -> str:
    return f"""import os
from xrerank.client import Reranker

reranker = Reranker("{connection.app_base_url}", "{connection.model_uid}", api_key=os.environ["{API_KEY_ENV}"])
for result in reranker.rerank("What is AI?", ["AI is the study of intelligent machines.", "Apples are fruit."]):
    print(result.index, round(result.score, 4), result.document)"""


def _llama_index(connection: Connection) -> str:
    return f"""# pip install 'xrerank[llama-index]'
import os
from llama_index.core.schema import NodeWithScore, TextNode
from xrerank.integrations.llama_index import XrerankRerank

rerank = XrerankRerank(endpoint="{connection.app_base_url}", model_uid="{connection.model_uid}",
                       api_key=os.environ["{API_KEY_ENV}"], top_n=2)
# in a query engine: index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
texts = ["AI is the study of intelligent machines.", "Apples are fruit."]
nodes = [NodeWithScore(node=TextNode(text=text)) for text in texts]
for node in rerank.postprocess_nodes(nodes, query_str="What is AI?"):
    print(round(node.score, 4), node.node.get_content())"""


def _langchain(connection: Connection) -> str:
    return f"""# pip install 'xrerank[langchain]'
import os
from langchain_core.documents import Document
from xrerank.integrations.langchain import XrerankRerank

compressor = XrerankRerank(endpoint="{connection.app_base_url}", model_uid="{connection.model_uid}",
                           api_key=os.environ["{API_KEY_ENV}"], top_n=2)
# in a chain: ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
documents = [Document(page_content=t) for t in ["AI is the study of intelligent machines.", "Apples are fruit."]]
for document in compressor.compress_documents(documents, "What is AI?"):
    print(round(document.metadata["relevance_score"], 4), document.page_content)"""


def _cohere(connection: Connection) -> str:
    return f"""# pip install cohere   (the v1 Client: ClientV2 calls /v2/rerank, which Xinference answers 405)
import os
import cohere

co = cohere.Client(base_url="{connection.app_base_url}", api_key=os.environ["{API_KEY_ENV}"])  # the host, no /v1
response = co.rerank(model="{connection.model_uid}", query="What is AI?",
                     documents=["AI is the study of intelligent machines.", "Apples are fruit."], top_n=2)
for result in response.results:
    print(result.index, round(result.relevance_score, 4))"""


def _rerankers(connection: Connection) -> str:
    return f"""# pip install rerankers   (model_type "cohere" speaks Xinference's /v1/rerank; url is the full route)
import os
from rerankers import Reranker

ranker = Reranker("{connection.model_uid}", model_type="cohere", api_key=os.environ["{API_KEY_ENV}"],
                  url="{connection.app_base_url}/v1/rerank", verbose=0)
for result in ranker.rank("What is AI?", ["AI is the study of intelligent machines.", "Apples are fruit."]).results:
    print(result.rank, round(result.score, 4), result.document.text)"""


def _xinference_client(connection: Connection) -> str:
    return f"""import os
from xinference_client import RESTfulClient

client = RESTfulClient("{connection.app_base_url}", api_key=os.environ["{API_KEY_ENV}"])
model = client.get_model("{connection.model_uid}")
documents = ["AI is the study of intelligent machines.", "Apples are fruit."]
answer = model.rerank(documents, "What is AI?")  # documents first, then the query
for result in answer["results"]:
    print(result["index"], round(result["relevance_score"], 4))"""


def _curl(connection: Connection) -> str:
    body = json.dumps({"model": connection.model_uid, "query": "What is AI?",
                       "documents": ["AI is the study of intelligent machines.", "Apples are fruit."]})  # fmt: skip
    auth = f' -H "Authorization: Bearer ${API_KEY_ENV}"' if connection.key else ""
    return (
        f"curl -s {connection.app_base_url}/v1/rerank -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}"
    )


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
    lines = [
        f"base URL     {connection.base_url}",
        *(
            [f"from other hosts and containers: {connection.app_base_url}"]
            if connection.app_base_url != connection.base_url
            else []
        ),  # noqa: E501
        f"rerank URL   {connection.app_base_url}/v1/rerank   (POST, Cohere-style body)",
        f"model uid    {connection.model_uid}",
        f"API key      {connection.shown_key(show_key) or 'none needed'}"
        + (f"   ({connection.key_note})" if connection.key else ""),
        "",
        "paste-ready: xrerank connect --format env|dotenv|curl|python|llama-index|langchain|cohere|rerankers|"
        "xinference-client|dify|ragflow",
    ]
    return "\n".join(lines)


# format -> (prints the key itself, the renderer). Code recipes read $XRERANK_API_KEY instead.
RECIPES: dict[str, tuple[bool, Callable[..., str]]] = {
    "text": (False, _text),
    "env": (True, _env),
    "dotenv": (True, _dotenv),
    "curl": (False, lambda c, show: _curl(c)),
    "python": (False, lambda c, show: _python(c)),
    "llama-index": (False, lambda c, show: _llama_index(c)),
    "langchain": (False, lambda c, show: _langchain(c)),
    "cohere": (False, lambda c, show: _cohere(c)),
    "rerankers": (False, lambda c, show: _rerankers(c)),
    "xinference-client": (False, lambda c, show: _xinference_client(c)),
    "dify": (True, _dify),
    "ragflow": (True, _ragflow),
}


def recipe(connection: Connection, form: str, show_key: bool) -> str:
    text = RECIPES[form][1](connection, show_key)
    if show_key and connection.key and not RECIPES[form][0]:
        # --show-key: the code recipes carry the key itself where they would read $XRERANK_API_KEY.
        text = text.replace(f'os.environ["{API_KEY_ENV}"]', repr(connection.key))
        text = text.replace(f"${API_KEY_ENV}", connection.key)
    return text


def prints_key(form: str, connection: Connection, show_key: bool) -> bool:
    return connection.key is not None and (RECIPES[form][0] or show_key)
