"""CLI behaviour that needs no Xinference: bad input, unreachable or foreign endpoints, output."""

import json
import time

import pytest
from conftest import free_port
from loopback import LoopbackServer, QuietHandler

from xrerank.client.http import server_reason


@pytest.fixture
def foreign_http_service():
    """Some other web app: 404 {"detail": "Not Found"} on every path, as FastAPI apps answer."""

    class Handler(QuietHandler):
        def _answer(self):
            self.send_json(404, {"detail": "Not Found"})

        do_GET = do_POST = do_DELETE = _answer

    with LoopbackServer(Handler) as server:
        yield server.url


def test_help_lists_every_command_and_every_command_has_help_with_an_example(run):
    from xrerank.cli import cli

    result = run("--help")
    assert result.exit_code == 0
    for name, command in cli.commands.items():
        assert name in result.stdout, name
        subcommands = getattr(command, "commands", {})
        for sub in subcommands.values() or [command]:
            path = [name] if sub is command else [name, sub.name]
            shown = run(*path, "--help").stdout
            assert "xrerank " in shown, f"{name} {sub.name}: no copy-pasteable example"


def test_the_names_the_cli_loads_alone_match_the_librarys_own():
    from xrerank.defaults import CONNECT_FORMATS, HUBS
    from xrerank.integrations.recipes import RECIPES
    from xrerank.weights import SOURCES, source_for

    assert tuple(RECIPES) == CONNECT_FORMATS
    assert all(name in SOURCES and hasattr(source_for(name), "download") for name in HUBS)


def test_the_cache_link_race_of_xinference_is_recognised_from_its_message():
    from xrerank.deploy.engine import _lost_the_cache_link_race
    from xrerank.errors import ServerError

    seen = (
        "replica 1 of demo-reranker failed: [Errno 17] File exists: '/root/.xinference/cache/v2/"
        "demo-bge-reranker-v2-m3-pytorch-none'"
    )  # as Xinference 4.1 reported it here, twice in ~10 first launches of two replicas
    assert _lost_the_cache_link_race(ServerError(seen))
    assert not _lost_the_cache_link_race(ServerError("replica 1 of x failed: CUDA out of memory"))


def test_nothing_listening_is_exit_3_within_10_seconds(run):
    started = time.monotonic()
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "status")
    assert result.exit_code == 3
    assert time.monotonic() - started < 10
    assert result.stderr.startswith("error: cannot reach Xinference") and result.stderr.count("\n") == 1


def test_an_endpoint_that_is_another_service_says_so(run, foreign_http_service):
    result = run("--endpoint", foreign_http_service, "status")
    assert result.exit_code == 3
    assert "not the Xinference REST API" in result.stderr


def test_a_register_against_another_service_explains_the_not_found(run, foreign_http_service, demo_model):
    result = run("--endpoint", foreign_http_service, "register", "--model-dir", demo_model, "--model-name", "custom-x")
    assert result.exit_code == 3
    assert "not the Xinference REST API" in result.stderr and "check --endpoint" in result.stderr


def test_spec_prints_the_json_xinference_accepts(run, demo_model):
    result = run("spec", "--model-dir", demo_model, "--model-name", "custom-demo", "--max-tokens", "256")
    assert result.exit_code == 0
    spec = json.loads(result.stdout)
    assert spec["version"] == 2 and spec["max_tokens"] == 256
    assert spec["model_specs"][0]["model_uri"] == str(demo_model)


def test_spec_writes_a_file(run, demo_model, tmp_path):
    output = tmp_path / "spec.json"
    assert run("spec", "--model-dir", demo_model, "--model-name", "custom-demo", "--output", output).exit_code == 0
    assert json.loads(output.read_text())["model_name"] == "custom-demo"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model-name", "bge-reranker-v2-m3"], "built-in"),
        (["--model-name", "has space"], "not allowed"),
        (["--model-name", "custom-x", "--max-tokens", "600"], "exceeds"),
    ],
)
def test_spec_refuses_bad_input_with_exit_2(run, demo_model, args, message):
    result = run("spec", "--model-dir", demo_model, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_a_directory_of_no_known_reranker_family_never_reaches_the_server(run, tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["XLMRobertaModel"]}')
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = run("--endpoint", unreachable, "register", "--model-dir", tmp_path, "--model-name", "custom-x")
    assert result.exit_code == 2 and "not a reranker family xrerank knows" in result.stderr


def test_the_flat_json_of_old_guides_is_refused_with_the_reason(run, tmp_path, demo_model):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"model_name": "custom-x", "model_id": "BAAI/bge-reranker-v2-m3", "model_uri": "x"}))
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "register", "--spec", flat)
    assert result.exit_code == 2 and "no model_specs" in result.stderr


def test_a_relative_model_uri_is_refused(run, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model_name": "custom-x", "model_specs": [{"model_uri": "tiny-model"}]}))
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "register", "--spec", spec)
    assert result.exit_code == 2 and "absolute path" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--replica", "2", "--gpu-idx", "0,1,2"], "multiple of the replica count"),
        (["--device", "cpu", "--use-fp16"], "6x slower"),
        (["--device", "cpu", "--gpu-idx", "0"], "contradicts"),
        (["--gpu-idx", "0,x"], "comma-separated"),
        (["--replica", "3", "--gpu-idx", "0,0"], "an index may repeat"),
        (["--gpu-idx", "0,-1"], "cannot be negative"),
    ],
)
def test_launch_refuses_what_it_can_check_before_calling(run, args, message):
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "launch", "--model-name", "custom-x", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_replica_zero_is_a_usage_error(run):
    assert run("launch", "--model-name", "custom-x", "--replica", "0").exit_code == 2


@pytest.mark.parametrize("count", ["99999999999999999999", "257", "0"])
def test_an_absurd_replica_count_is_refused_before_anything_is_sent(run, count):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would be exit 3
    for args in (("scale", "--model-uid", "m", count), ("launch", "--model-name", "custom-x", "--replica", count)):
        result = run("--endpoint", endpoint, *args)
        assert result.exit_code == 2 and "1<=x<=256" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("scale", "--model-uid", "../x y", "2"),
        ("scale", "--model-uid", "", "2"),
        ("terminate", "--model-uid", ""),
        ("status", "--model-uid", "a/b"),
        ("unregister", "--model-name", ""),
        ("launch", "--model-name", "custom-x", "--model-uid", ""),
        ("keys", "create", "app", "--model-uid", "a b"),
    ],
)
def test_a_uid_or_name_the_server_cannot_have_is_a_usage_error(run, args):
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", *args)
    assert result.exit_code == 2, result.stderr
    assert "is not allowed" in result.stderr or "is required" in result.stderr, result.stderr


@pytest.mark.parametrize("wait", ["nan", "inf"])
def test_a_wait_that_is_not_a_number_of_seconds_is_refused(run, wait):
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "terminate", "--model-uid", "m", "--wait", wait)
    assert result.exit_code == 2 and "give a number of seconds" in result.stderr


def test_rerank_without_documents_is_a_usage_error(run):
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "rerank", "what is AI?")
    assert result.exit_code == 2 and "no documents to rank" in result.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_code(run):
    result = run("--debug", "--endpoint", f"http://127.0.0.1:{free_port()}", "status")
    assert result.exit_code == 3 and "Traceback" in result.stderr and "error: cannot reach" in result.stderr


def test_an_endpoint_ending_in_v1_is_the_server_it_names():
    from xrerank.client.http import parse_endpoint

    assert parse_endpoint("http://127.0.0.1:9997/v1") == "http://127.0.0.1:9997"
    assert parse_endpoint("http://127.0.0.1:9997/v1/") == "http://127.0.0.1:9997"
    assert parse_endpoint("https://proxy.example/xinference/v1") == "https://proxy.example/xinference"


def test_a_docs_file_that_is_not_utf8_is_refused(run, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_bytes(b"caf\xe9\n")
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "rerank", "q", "--docs-file", docs)
    assert result.exit_code == 2 and "not UTF-8" in result.stderr


def test_the_servers_text_plain_500_becomes_one_line():
    body = "Internal Server Error: 3 validation errors for RerankRequest\nquery\n  str type expected"
    assert server_reason(body) == "Internal Server Error: 3 validation errors for RerankRequest query str type expected"


def test_the_actor_address_is_dropped_from_reasons():
    body = json.dumps({"detail": "[address=127.0.0.1:45698, pid=12424] Model custom-x already registered"})
    assert server_reason(body) == "Model custom-x already registered"


def test_deploy_of_a_broken_file_is_exit_2(run, tmp_path):
    broken = tmp_path / "d.yaml"
    broken.write_text("version: 1\nweights: {source: demo}\nregistration: {model_name: x}\nlaunch: {replica: 0}\n")
    result = run("deploy", broken)
    assert result.exit_code == 2 and "d.yaml:4: launch.replica" in result.stderr


def test_make_demo_model_warns_that_scores_are_meaningless(run, tmp_path):
    result = run("make-demo-model", tmp_path / "demo")
    assert result.exit_code == 0 and "meaningless" in result.stderr
    assert (tmp_path / "demo" / "model.safetensors").is_file()


def test_a_spec_file_that_is_not_json_is_refused(run, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("{'model_name': ")
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "register", "--spec", spec)
    assert result.exit_code == 2 and "is not valid JSON" in result.stderr


@pytest.mark.parametrize("command", [["spec", "--model-name", "x"], ["register", "--model-name", "x"]])
def test_a_missing_model_directory_is_a_usage_error(run, tmp_path, command):
    result = run(command[0], "--model-dir", tmp_path / "missing", *command[1:])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_a_deployment_whose_local_weights_are_missing_changes_nothing(run, tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(
        f"version: 1\nweights: {{source: local, dir: {tmp_path / 'nowhere'}}}\nregistration: {{model_name: x}}\n"
    )
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "deploy", path)
    assert result.exit_code == 3  # the server is asked first; nothing was created on disk
    assert not (tmp_path / "nowhere").exists()


def test_the_cli_starts_without_the_heavy_libraries():
    """`xrerank --help` stays instant: torch, transformers, modelscope, xinference and requests load on use."""
    import subprocess
    import sys

    heavy = ["torch", "transformers", "sentence_transformers", "modelscope", "xinference_client", "requests", "numpy"]
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom xrerank.cli import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_keys_prune_without_a_login_says_it_needs_one(run):
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "keys", "prune")
    assert result.exit_code == 2 and "needs a user login (--username/--password)" in result.stderr


def test_spec_output_dash_is_stdout(run, demo_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("spec", "--model-dir", demo_model, "--model-name", "custom-x", "--output", "-")
    assert result.exit_code == 0 and json.loads(result.stdout)["model_name"] == "custom-x"
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    "key, says",
    [(123, "must be a string, got a int"), ("", "is empty"), ("xf-abc\n", "holds a newline"),
     ("xf a", "a space, a tab or a non-ASCII"), ("xf-é", "a space, a tab or a non-ASCII")],
)  # fmt: skip
def test_a_bad_key_is_named_for_what_is_wrong_with_it(key, says, monkeypatch):
    from xrerank.client import Reranker, RerankError

    with pytest.raises(RerankError, match=says):
        Reranker(f"http://127.0.0.1:{free_port()}", "m", api_key=key)
    if isinstance(key, str) and key:
        monkeypatch.setenv("XRERANK_API_KEY", key)
        with pytest.raises(RerankError, match=r"\$XRERANK_API_KEY") as raised:
            Reranker(f"http://127.0.0.1:{free_port()}", "m")
        assert says in str(raised.value)


def test_the_score_cache_is_exported_with_the_client():
    from xrerank.client import ScoreCache
    from xrerank.client.cache import ScoreCache as Defined

    assert ScoreCache is Defined


def test_an_integration_without_its_framework_names_the_extra():
    import subprocess
    import sys

    code = "import sys; sys.modules['langchain_core'] = None\nimport xrerank.integrations.langchain"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "pip install 'xrerank[langchain]'" in done.stderr
