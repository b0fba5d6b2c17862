"""Handing the service to apps: every `xrerank connect` recipe pasted into its real consumer, auth on.

Each format's output is run as a user would: the env lines exported, the code recipes run in a
fresh interpreter with the real framework package, the curl line in a shell, and Dify's and
RAGFlow's forms filled into the exact requests their Xinference connectors send.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from conftest import DEMO

pytestmark = pytest.mark.e2e
UID = "apps-reranker"


@pytest.fixture(scope="module")
def deployed(xinference, home, tmp_path_factory):
    from conftest import Cli

    path = tmp_path_factory.mktemp("apps") / "apps.yaml"
    path.write_text(
        DEMO.read_text()
        .replace("model_uid: demo-reranker", f"model_uid: {UID}")
        .replace("replica: 2", "replica: 1")
        .replace("model_name: demo-bge-reranker-v2-m3", "model_name: apps-bge-reranker")
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XRERANK_HOME", str(home))
        result = Cli()(*xinference.admin_args, "deploy", path)
    assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def app_env(xinference, home, deployed):
    """`eval "$(xrerank connect --new-key recipes --format env)"`: what the recipes run with."""
    from conftest import Cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XRERANK_HOME", str(home))
        result = Cli()(*xinference.admin_args, "connect", "--model-uid", UID, "--new-key", "recipes", "--format", "env")
    assert result.exit_code == 0, result.stderr
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in result.stdout.splitlines())
    assert exported["XRERANK_API_KEY"].startswith("xf-") and exported["XRERANK_MODEL_UID"] == UID
    assert exported["XRERANK_API_KEY"] not in result.stderr
    assert "note: this output holds a new key for the app recipes, limited to apps-reranker; keep it out of logs" in (
        result.stderr.splitlines()
    )
    return {**os.environ, **exported}


def _recipe(run, admin, form: str) -> str:
    result = run(*admin, "connect", "--model-uid", UID, "--key", "recipes", "--format", form)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _python(code: str, env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_connect_prints_the_urls_uid_and_a_hidden_key(run, admin, xinference, app_env):
    result = run(*admin, "connect", "--model-uid", UID, "--key", "recipes")
    assert result.exit_code == 0, result.stderr
    assert f"rerank URL   {xinference.endpoint}/v1/rerank" in result.stdout and f"model uid    {UID}" in result.stdout
    key = app_env["XRERANK_API_KEY"]
    assert key not in result.stdout + result.stderr and "add --show-key" in result.stdout
    shown = run(*admin, "connect", "--model-uid", UID, "--key", "recipes", "--show-key")
    assert key in shown.stdout and key not in shown.stderr
    result, document = run.json(*admin, "connect", "--model-uid", UID, "--key", "recipes")
    assert key not in result.stdout and document["rerank_url"] == f"{xinference.endpoint}/v1/rerank"


# format -> the consumer's own virtualenv (tests/consumers/NAME.txt), or None: the suite's environment.
CONSUMERS = {
    "python": None, "llama-index": None, "langchain": None, "cohere": None, "rerankers": None,
    "xinference-client": None, "haystack": "cohere-v7", "cohere-v2": "cohere-v7", "haystack-cohere": "cohere-v7",
    "litellm": "cohere-v7", "langchain-cohere": "cohere-v5", "llama-index-cohere": "cohere-v5",
    "llama-index-xinference": "cohere-v5",
}  # fmt: skip
# What each consumer says of a wrong key, in its own words (rerankers does not look at the status).
REFUSALS = {
    "python": "RerankError", "llama-index": "RerankError", "langchain": "RerankError", "haystack": "RerankError",
    "cohere": "UnauthorizedError", "cohere-v2": "UnauthorizedError", "haystack-cohere": "UnauthorizedError",
    "langchain-cohere": "UnauthorizedError", "llama-index-cohere": "UnauthorizedError",
    "litellm": "AuthenticationError", "llama-index-xinference": "status code 401", "rerankers": "KeyError: 'results'",
    "xinference-client": "Could not validate credentials",
}  # fmt: skip
CONSUMERS_DIR = Path(__file__).resolve().parent / "consumers"


@pytest.fixture(scope="module")
def consumer_pythons(built_wheel, tmp_path_factory) -> dict:
    """Each consumer set in a virtualenv of its own, installed from the package index as a user would;
    the Cohere-v7 one also holds xrerank's wheel with its haystack extra. Both install at once."""
    root, pythons, installs = tmp_path_factory.mktemp("consumers"), {None: sys.executable}, {}
    for name in ("cohere-v5", "cohere-v7"):
        subprocess.run([sys.executable, "-m", "venv", str(root / name)], check=True)
        pythons[name] = str(root / name / "bin" / "python")
        extra = [f"xrerank[haystack] @ {built_wheel.as_uri()}"] if name == "cohere-v7" else []
        installs[name] = subprocess.Popen(
            [pythons[name], "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
             str(CONSUMERS_DIR / f"{name}.txt"), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    for name, install in installs.items():
        output = install.communicate(timeout=1200)[0]
        assert install.returncode == 0, f"{name}: {output[-3000:]}"
    return pythons


def _route(xinference) -> str:
    from xrerank.xinference.gateway import running

    route = running(xinference.directory)
    assert route is not None, "the embedded server runs without its Cohere-v2 route"
    return route.url


def _program(run, admin, xinference, form: str) -> str:
    result = run(*admin, "connect", "--model-uid", UID, "--key", "recipes", "--format", form, "--v2-url",
                 _route(xinference))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _ranked(python: str, code: str, env: dict) -> list[str]:
    """The documents a printed program ranked, best first (each line: a score, a space, the text)."""
    if python != sys.executable:  # a consumer's own virtualenv: nothing of the suite's on its path
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=180, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    ranked = []
    for line in done.stdout.splitlines():
        score, _, text = line.partition(" ")
        assert 0.0 <= float(score) <= 1.0, line
        ranked.append(text)
    return ranked


@pytest.mark.parametrize("form", list(CONSUMERS))
def test_each_consumer_ranks_three_documents_as_the_client_does(run, admin, xinference, app_env, consumer_pythons,
                                                                 form):  # fmt: skip
    from xrerank.client import Reranker
    from xrerank.integrations.snippets import DOCUMENTS, QUERY

    with Reranker(xinference.endpoint, UID, api_key=app_env["XRERANK_API_KEY"]) as client:
        expected = [result.document for result in client.rerank(QUERY, list(DOCUMENTS))]
    assert len(set(expected)) == 3
    assert _ranked(consumer_pythons[CONSUMERS[form]], _program(run, admin, xinference, form), app_env) == expected


@pytest.mark.parametrize("form", list(CONSUMERS))
def test_a_wrong_key_gets_each_consumers_own_error_at_once(run, admin, xinference, app_env, consumer_pythons, form):
    env = {**app_env, "XRERANK_API_KEY": "xf-" + "0" * 24, "PYTHONPATH": ""}
    python = consumer_pythons[CONSUMERS[form]]
    done = subprocess.run([python, "-c", _program(run, admin, xinference, form)], env=env, capture_output=True,
                          text=True, timeout=120, cwd="/")  # fmt: skip
    ranked = [line for line in done.stdout.splitlines() if line[:1].isdigit()]  # litellm prints help to stdout
    assert done.returncode != 0 and ranked == [], done.stdout
    assert REFUSALS[form] in done.stderr, done.stderr[-2000:]


def test_the_route_forwards_rerank_only_and_turns_basic_credentials_into_the_bearer_key(xinference, app_env):
    route = _route(xinference)
    body = {"model": UID, "query": "q", "documents": ["a", "b"], "max_tokens_per_doc": 64}
    good = {"Authorization": f"Bearer {app_env['XRERANK_API_KEY']}"}
    answer = requests.post(f"{route}/v2/rerank", json=body, headers=good, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 2
    # Basic credentials (llama-index's XinferenceRerank, the key in its URL) become the Bearer key.
    assert requests.post(f"{route}/v1/rerank", json=body, auth=("xrerank", app_env["XRERANK_API_KEY"]),
                         timeout=60).status_code == 200  # fmt: skip
    assert requests.post(f"{route}/v2/rerank", json=body, timeout=60).status_code == 401  # Xinference's check
    elsewhere = requests.get(f"{route}/v1/models", headers=good, timeout=60)
    assert elsewhere.status_code == 404 and xinference.endpoint in elsewhere.json()["detail"]
    # A password that cannot be a header: no key goes on (Xinference's 401), and no traceback is logged.
    log = xinference.directory / "gateway.log"
    logged = log.stat().st_size
    injected = requests.post(f"{route}/v1/rerank", json=body, auth=("x", "key\r\nX-Evil: 1"), timeout=60)
    assert injected.status_code == 401
    assert "Traceback" not in log.read_text()[logged:]


def test_a_busy_v2_port_is_refused_and_the_running_route_stays(xinference):
    import socket

    from xrerank.errors import BadInput
    from xrerank.xinference import gateway, local

    before = gateway.running(xinference.directory)
    port = int(xinference.endpoint.rsplit(":", 1)[1])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(BadInput, match="in use by another program"):
            local.start(xinference.directory, port, v2_port=busy.getsockname()[1])
    assert before is not None and gateway.running(xinference.directory) == before


def test_connect_json_takes_no_format(run, admin, xinference, app_env):
    result = run(*admin, "connect", "--model-uid", UID, "--key", "recipes", "--json", "--format", "cohere-v2")
    assert result.exit_code == 2 and "--json prints the facts" in result.stderr


def test_bad_keys_through_the_route_ban_their_sender_not_every_app_behind_the_route(xinference, app_env):
    """The route names the caller to Xinference (X-Forwarded-For): an app retrying a stale key gets
    its own address banned, and the other apps reaching Xinference through the route keep working."""
    from xrerank.client.http import Api, Banned, Credentials, Refused
    from xrerank.xinference import local

    route, body = _route(xinference), {"model": UID, "query": "q", "documents": ["a", "b"]}
    stale = Api(route, Credentials(api_key="xf-" + "1" * 24), source_address="127.0.0.3")
    try:
        with pytest.raises(Banned):
            for _ in range(150):  # the embedded server bans after 100 failures in a minute
                with contextlib.suppress(Refused):
                    stale.post("/v2/rerank", json=body)
        other_app = Api(route, Credentials(api_key=app_env["XRERANK_API_KEY"]))  # from 127.0.0.1
        assert len(other_app.post("/v2/rerank", json=body)["results"]) == 2
    finally:
        local.unban(xinference.directory)


def test_the_curl_recipe_runs(run, admin, app_env):
    done = subprocess.run(["bash", "-c", _recipe(run, admin, "curl")], env=app_env, capture_output=True, text=True)
    answer = json.loads(done.stdout)
    assert sorted(item["index"] for item in answer["results"]) == [0, 1, 2]


def _form(text: str) -> dict[str, str]:
    """The fields of a printed form: 'Server URL     http://...   (note)' -> {'Server URL': 'http://...'}."""
    import re

    fields = {}
    for line in text.splitlines()[1:]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) >= 2:
            fields[parts[0]] = parts[1]
    return fields


def test_the_dify_form_filled_into_difys_xinference_rerank_request(run, admin, app_env):
    from xinference_client.client.restful.restful_client import RESTfulRerankModelHandle

    form = _form(_recipe(run, admin, "dify"))
    # Dify's connector: the handle with an Authorization header from the form's API key.
    handle = RESTfulRerankModelHandle(
        form["Model UID"], form["Server URL"].rstrip("/"), {"Authorization": f"Bearer {form['API Key']}"}
    )
    answer = handle.rerank(["AI is the study of machines that learn.", "Apples are fruit."], "What is AI?", top_n=2)
    assert form["API Key"] == app_env["XRERANK_API_KEY"] and len(answer["results"]) == 2


def test_the_ragflow_form_filled_into_ragflows_xinference_rerank_request(run, admin, app_env):
    form = _form(_recipe(run, admin, "ragflow"))
    # RAGFlow's XInferenceRerank: base URL + /v1/rerank, the flags as strings, a Bearer key.
    url = urljoin(form["Base url"], "/v1/rerank")
    body = {"model": form["Model name"], "query": "What is AI?", "return_documents": "true", "return_len": "true",
            "documents": ["AI is the study of machines that learn.", "Apples are fruit."]}  # fmt: skip
    headers = {"Content-Type": "application/json", "accept": "application/json",
               "Authorization": f"Bearer {form['API-Key']}"}  # fmt: skip
    answer = requests.post(url, headers=headers, json=body, timeout=60).json()
    assert sorted(item["index"] for item in answer["results"]) == [0, 1]
    assert all(item["relevance_score"] > 0 for item in answer["results"])  # not RAGFlow's silent 0.0


def test_the_async_langchain_path_works_outside_an_event_loop(app_env, xinference):
    code = (
        "import asyncio, os\n"
        "from langchain_core.documents import Document\n"
        "from xrerank.integrations.langchain import XrerankRerank\n"
        f"c = XrerankRerank(endpoint={xinference.endpoint!r}, model_uid={UID!r}, top_n=1)\n"  # key from the env
        "docs = asyncio.run(c.acompress_documents([Document(page_content='a'), Document(page_content='b')], 'q'))\n"
        "print(len(docs), 'relevance_score' in docs[0].metadata)\n"
    )
    assert _python(code, app_env) == ["1 True"]


def test_a_key_per_app_is_limited_to_its_model_and_revoked_at_once_without_the_others(run, admin, xinference,
                                                                                      app_env):  # fmt: skip
    result, created = run.json(*admin, "keys", "create", "revoked-app", "--model-uid", UID)
    assert result.exit_code == 0 and created["api_key"].startswith("xf-") and created["models"] == [UID]
    assert created["api_key"] not in result.stderr
    result, listing = run.json(*admin, "keys", "list")
    apps = {row["app"]: row for row in listing["keys"]}
    assert apps["revoked-app"]["enabled"] and apps["revoked-app"]["models"] == [UID]
    assert created["api_key"] not in result.stdout  # listings show prefixes only

    def ranks(key: str, model: str = UID) -> int:
        body = {"model": model, "query": "q", "documents": ["a", "b"]}
        headers = {"Authorization": f"Bearer {key}"}
        return requests.post(f"{xinference.endpoint}/v1/rerank", json=body, headers=headers, timeout=60).status_code

    assert ranks(created["api_key"]) == 200
    assert ranks(created["api_key"], model="some-other-model") == 403  # the server scopes it to the model
    result, revoked = run.json(*admin, "keys", "revoke", "revoked-app")
    assert revoked["outcome"] == "revoked"
    assert ranks(created["api_key"]) == 401  # at once
    assert ranks(app_env["XRERANK_API_KEY"]) == 200  # the other app's key keeps working
    assert run.json(*admin, "keys", "revoke", "revoked-app")[1]["outcome"] == "absent"


@pytest.mark.parametrize(
    "flags, form, note",
    [(("--new-key", "notes-a"), "env", "this output holds a new key for the app notes-a, limited to apps-reranker"),
     (("--new-key", "notes-b"), "python", "a key for the app notes-b was created; `xrerank connect --key notes-b "
                                          "--format env` prints it as XRERANK_API_KEY, which the recipes read"),
     (("--key", "recipes"), "dotenv", "this output holds the key of the app recipes"),
     (("--key", "recipes", "--show-key"), "haystack", "this output holds the key of the app recipes"),
     (("--key", "recipes"), "cohere-v2", None), (("--key", "recipes"), "text", None)],
)  # fmt: skip
def test_connects_notes_read_as_sentences_in_every_combination(run, admin, xinference, app_env, flags, form, note):
    result = run(*admin, "connect", "--model-uid", UID, *flags, "--format", form, "--v2-url", _route(xinference))
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    if note is None:
        assert notes == []
    else:
        assert notes == [f"note: {note}" + ("; keep it out of logs" if "holds" in note else "")]


def test_a_cohere_v2_format_without_a_route_says_how_to_get_one(run, admin):
    result = run(*admin, "connect", "--model-uid", UID, "--key", "recipes", "--format", "langchain-cohere")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "xrerank gateway" in errors[0], result.stderr


def test_connect_without_a_key_for_the_app_says_how_to_get_one(run, admin):
    result = run(*admin, "connect", "--model-uid", UID)
    assert result.exit_code == 2 and "--new-key APP" in result.stderr


# --- the client-only install: `pip install xrerank`, no extras, into a fresh virtualenv -----------


@pytest.fixture(scope="module")
def client_only(built_wheel, tmp_path_factory) -> dict:
    """The wheel and its declared dependencies alone, resolved by pip from the package index: a
    module imported but not declared fails here, and the server side (torch) must not come along."""
    venv = tmp_path_factory.mktemp("client-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                str(built_wheel)], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    absent = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', "
                             "'sentence_transformers', 'xinference') if u.find_spec(m)])"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert absent == "[]", f"a client-only install brought the server side: {absent}"
    return {"xrerank": str(venv / "bin" / "xrerank"), "python": python}


def _client_only_run(client_only: dict, env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([client_only["xrerank"], *map(str, args)], env=clean, capture_output=True, text=True,
                          timeout=120, cwd="/")  # fmt: skip


def test_a_client_only_install_ranks_connects_and_reports(client_only, app_env, xinference, admin, home):
    app_env = {**app_env, "XRERANK_HOME": str(home)}  # where connect keeps the app keys it made
    ranked = _client_only_run(client_only, app_env, "--endpoint", xinference.endpoint, "rerank", "--model-uid", UID,
                              "--json", "What is AI?", "AI is a field of computer science.", "Apples are red.",
                              "Paris is in France.")  # fmt: skip
    assert ranked.returncode == 0, ranked.stderr
    assert sorted(r["index"] for r in json.loads(ranked.stdout)["results"]) == [0, 1, 2]
    connected = _client_only_run(client_only, app_env, *admin, "connect", "--model-uid", UID, "--key", "recipes",
                                 "--format", "env")  # fmt: skip
    assert connected.returncode == 0, connected.stderr
    assert f"XRERANK_MODEL_UID={UID}" in connected.stdout and app_env["XRERANK_API_KEY"] in connected.stdout
    status = _client_only_run(client_only, app_env, *admin, "status", "--model-uid", UID, "--json")
    assert status.returncode == 0, status.stderr
    keys = _client_only_run(client_only, app_env, *admin, "keys", "list", "--json")
    assert keys.returncode == 0 and "recipes" in keys.stdout, keys.stderr
    code = ("import os; from xrerank.client import Reranker\n"
            "with Reranker(os.environ['XRERANK_ENDPOINT'], os.environ['XRERANK_MODEL_UID']) as r:\n"
            "    print(len(r.rerank('q', ['a', 'b'])))")  # fmt: skip
    library = subprocess.run([client_only["python"], "-c", code], env=app_env, capture_output=True, text=True,
                             timeout=120, cwd="/")  # fmt: skip
    assert library.returncode == 0 and library.stdout.strip() == "2", library.stderr


@pytest.mark.parametrize(
    "args",
    [("make-demo-model", "{tmp}/demo"), ("server", "start", "--home", "{tmp}/server", "--port", "{port}"),
     ("up", "--demo", "--port", "{port}"),
     ("--endpoint", "{endpoint}", "bench", "--model-uid", UID, "--in-process", "--duration", "1")],
    ids=["make-demo-model", "server-start", "up", "bench-in-process"],
)  # fmt: skip
def test_a_client_only_install_names_the_server_extra_for_each_heavy_command(client_only, app_env, xinference,
                                                                             tmp_path, args):  # fmt: skip
    from conftest import free_port

    port = free_port()
    env = {**{k: v for k, v in app_env.items() if k != "XRERANK_ENDPOINT"}, "XRERANK_HOME": str(tmp_path / "home")}
    done = _client_only_run(client_only, env, *(a.format(tmp=tmp_path, port=port, endpoint=xinference.endpoint)
                                                for a in args))  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "xrerank[server]" in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "server").exists()
