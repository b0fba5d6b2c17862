"""Handing the service to apps: every `xrerank connect` recipe pasted into its real consumer, auth on.

Each format's output is run as a user would: the env lines exported, the code recipes run in a
fresh interpreter with the real framework package, the curl line in a shell, and Dify's and
RAGFlow's forms filled into the exact requests their Xinference connectors send.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
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
    assert "this output holds the key created for recipes, limited to apps-reranker" in result.stderr
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


@pytest.mark.parametrize("form", ["python", "llama-index", "langchain", "cohere", "rerankers", "xinference-client"])
def test_each_code_recipe_runs_against_the_server_and_ranks(run, admin, app_env, form):
    lines = _python(_recipe(run, admin, form), app_env)
    assert len(lines) == 2, lines  # two documents ranked, each with its score


def test_the_curl_recipe_runs(run, admin, app_env):
    done = subprocess.run(["bash", "-c", _recipe(run, admin, "curl")], env=app_env, capture_output=True, text=True)
    answer = json.loads(done.stdout)
    assert sorted(item["index"] for item in answer["results"]) == [0, 1]


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
