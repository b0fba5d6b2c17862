"""Never destroy what xrerank did not make, never crash on bad input (no server needed).

Each test here reproduced a defect found by an adversarial pass before its fix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from loopback import LoopbackServer, QuietHandler

from xrerank.client import Reranker, RerankError
from xrerank.errors import BadInput, ExitCode
from xrerank.weights.modeldir import MANIFEST, NotOurs, purge, read_complete_manifest, write_manifest
from xrerank.xinference.local import process_identity

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _own_weights(directory: Path) -> Path:
    """A directory as xrerank leaves it after a download: files, then the manifest."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "sub").mkdir()
    (directory / "sub" / "model.safetensors").write_bytes(b"weights" * 100)
    write_manifest(directory, {"source": "modelscope", "model_id": "a/b", "revision": "master"})
    return directory


# --- purge: only what xrerank wrote --------------------------------------------------------------


def test_purge_refuses_a_directory_without_a_manifest_and_deletes_nothing(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(NotOurs, match="no xrerank manifest"):
        purge(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_purge_deletes_the_listed_files_and_then_the_empty_directory(tmp_path):
    weights = _own_weights(tmp_path / "weights")
    result = purge(weights)
    assert sorted(result.deleted) == ["config.json", "sub/model.safetensors"]
    assert result.kept == [] and not weights.exists() and tmp_path.exists()


def test_purge_keeps_files_it_did_not_write_and_files_changed_since(tmp_path):
    weights = _own_weights(tmp_path / "weights")
    (weights / "notes.txt").write_text("mine")
    (weights / "config.json").write_text("{ }")  # same size, other bytes: not what xrerank wrote
    result = purge(weights)
    assert result.deleted == ["sub/model.safetensors"]
    assert result.kept == ["config.json", "notes.txt"]
    assert (weights / "notes.txt").read_text() == "mine" and not (weights / MANIFEST).exists()


def test_purge_never_follows_a_listed_file_out_of_the_directory(tmp_path):
    weights = _own_weights(tmp_path / "weights")
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    manifest = json.loads((weights / MANIFEST).read_text())
    manifest["files"]["../outside.txt"] = {"size": outside.stat().st_size, "sha256": "x"}
    (weights / MANIFEST).write_text(json.dumps(manifest))
    purge(weights)
    assert outside.read_text() == "not yours"


def test_purge_never_touches_a_local_source_even_one_with_a_manifest(run, tmp_path, demo_model):
    local = tmp_path / "mine"
    shutil.copytree(demo_model, local)  # a directory xrerank once wrote, now the user's `local` source
    path = tmp_path / "local.yaml"
    path.write_text(f"version: 1\nweights: {{source: local, dir: {local}}}\nregistration: {{model_name: mine-x}}\n")
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "destroy", path, "--purge-weights")
    assert result.exit_code == 2 and "never purged" in result.stderr
    assert sorted(os.listdir(local)) == sorted(os.listdir(demo_model))


# --- weights are written only into a new, empty or xrerank directory -------------------------------


def test_the_demo_model_is_not_generated_into_someone_elses_directory(run, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    result = run("make-demo-model", precious)
    assert result.exit_code == 2 and "not an xrerank model directory" in result.stderr
    assert os.listdir(precious) == ["keep.txt"]


def test_a_file_where_the_weights_should_go_is_one_line_and_exit_2(run, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0\n")
    result = run("make-demo-model", passwd)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "is a file, not a directory" in result.stderr
    assert passwd.read_text() == "root:x:0:0\n"


def test_a_download_into_a_directory_with_foreign_files_is_refused(run, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    result = run("download", "a/b", "--local-dir", precious, "--hub-endpoint", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2 and "did not write" in result.stderr
    assert os.listdir(precious) == ["keep.txt"]


def test_staging_left_by_a_killed_generation_is_removed_by_the_next_run(tmp_path):
    from xrerank.weights.generated import make_demo_model

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f".demo.xrerank-staging-{dead.pid}-abc"
    abandoned.mkdir()
    (abandoned / "model.safetensors").write_bytes(b"half")
    running = tmp_path / f".demo.xrerank-staging-{os.getpid()}-def"  # a run still under way: kept
    running.mkdir()
    make_demo_model(tmp_path / "demo")
    assert not abandoned.exists() and running.exists()
    assert read_complete_manifest(tmp_path / "demo") is not None


def test_generated_weights_are_readable_by_a_server_running_as_another_user(demo_model):
    for path in demo_model.iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path.name


# --- the deployment file ------------------------------------------------------------------------

VALID = CONFIGS.joinpath("demo.yaml").read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        (VALID.replace("  model_uid: demo-reranker\n", "  model_uid: demo-reranker\n  model_uid: other\n"),
         r":\d+: key 'model_uid' appears twice \(first on line \d+\)"),
        ("version: 1\nweights: &w {source: demo}\nregistration: {model_name: x}\nlaunch: {env: *w}\n",
         "anchors and aliases are not supported"),
        (VALID.replace("model_uid: demo-reranker", "model_uid: ../x"),
         "launch.model_uid: model uid '../x' is not allowed"),
        (VALID.replace("model_name: demo-bge-reranker-v2-m3", "model_name: " + "n" * 5000),
         "registration.model_name: model name 'nnn.*' is 5000 characters long"),
        (VALID.replace("source: demo", "source: huggingface"), "source huggingface needs model_id"),
    ],
)  # fmt: skip
def test_deployment_files_that_are_ambiguous_or_unsafe_are_refused_with_file_and_line(run, tmp_path, text, message):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "deploy", path, "--dry-run")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: {path}") and result.stderr.count("\n") == 1
    import re

    assert re.search(message, result.stderr), result.stderr


def test_a_huge_deployment_file_is_refused_before_it_is_parsed(run, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(VALID + "# " + "x" * (50 << 20) + "\n")
    started = time.monotonic()
    result = run("deploy", path, "--dry-run")
    assert result.exit_code == 2 and "at most 1048576 bytes" in result.stderr
    assert time.monotonic() - started < 5


# --- endpoints and credentials -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9997", "ftp://127.0.0.1:9997", "http://", "http://host:notaport"])
def test_an_endpoint_that_is_not_an_http_url_is_one_line_and_exit_2(run, endpoint):
    result = run("--endpoint", endpoint, "status")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "is not an http(s) URL" in result.stderr or "not a server address" in result.stderr


@pytest.mark.parametrize("endpoint", ['http://h:1/"); import os; os.system("id', "http://h:1/a b", "http://h:1/a\\b"])
def test_an_endpoint_that_would_break_out_of_a_printed_recipe_is_refused(run, endpoint):
    """connect pastes the endpoint (and --v2-url) into programs: a quote there would end the string."""
    result = run("--endpoint", endpoint, "status")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "a URL cannot" in result.stderr


def test_a_v2_port_equal_to_the_servers_port_is_refused_before_anything_starts(run, tmp_path):
    result = run("server", "start", "--home", tmp_path / "server", "--port", "20999", "--v2-port", "20999")
    assert result.exit_code == 2 and "--v2-port 20999 is the server's own --port" in result.stderr
    assert not (tmp_path / "server").exists()


@pytest.mark.parametrize("password", ["key\r\nX-Evil: 1", "key\x00", "a\nb"])
def test_a_basic_password_that_cannot_be_a_header_is_dropped_not_forwarded(password):
    import base64

    from xrerank.xinference.gateway import bearer

    assert bearer("Basic " + base64.b64encode(f"xrerank:{password}".encode()).decode()) is None
    assert bearer("Basic " + base64.b64encode(b"xrerank:xf-abc").decode()) == "Bearer xf-abc"
    assert bearer("Bearer xf-abc") == "Bearer xf-abc" and bearer(None) is None


def test_a_login_against_an_unreachable_server_is_exit_3_in_one_line(run):
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "--username", "a", "--password", "b", "status")
    assert result.exit_code == 3 and result.stderr.count("\n") == 1 and "cannot reach" in result.stderr


# --- the client's documented contract -----------------------------------------------------------


def _client(**kwargs) -> Reranker:
    return Reranker(f"http://127.0.0.1:{free_port()}", "m", api_key="xf-test", retry_for=0, **kwargs)


@pytest.mark.parametrize(
    "query, documents, top_n, message",
    [
        (5, ["a"], None, "the query must be a string, got int"),
        ("  ", ["a"], None, "the query is empty"),
        ("q", "a single string", None, "documents must be a list of strings"),
        ("q", ["a", 3], None, "documents must be strings; document 1 is int"),
        ("q", ["a", None], None, "documents must be strings; document 1 is NoneType"),
        ("q", {"key": "value"}, None, "documents must be a list of strings, got dict"),
        ("q", ["a", "broken \udc80 decode"], None, "document 1 holds a character that is not valid Unicode"),
        ("broken \ud800", ["a"], None, "the query holds a character that is not valid Unicode"),
        ("q", ["a"], 1.5, "top_n must be a whole number"),
        ("q", ["a"], True, "top_n must be a whole number"),
        ("q", ["a"], -1, "top_n must be a whole number"),
    ],
)
def test_bad_client_input_is_a_rerank_error_with_exit_code_2(query, documents, top_n, message):
    with pytest.raises(RerankError, match=message) as raised:
        _client().rerank(query, documents, top_n=top_n)
    assert raised.value.exit_code == ExitCode.BAD_INPUT and isinstance(raised.value, BadInput) is False


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": -1}, "timeout must be more than 0 seconds, got -1"),
        ({"timeout": 0}, "timeout must be more than 0 seconds, got 0"),
        ({"timeout": "x"}, "timeout must be a number of seconds, got 'x'"),
        ({"timeout": float("nan")}, "timeout must be a number of seconds"),
        ({"retry_for": -5}, "retry_for must be 0 or more seconds"),
        ({"retry_for": None}, "retry_for must be a number of seconds"),
        ({"timeout": 1e300}, "timeout must be at most 86400 seconds"),
        ({"api_key": "xf-key\n"}, "api_key holds a newline \\(7 characters\\); strip it"),
        ({"api_key": "xf-ключ"}, "api_key holds a space, a tab or a non-ASCII character"),
        ({"api_key": 123}, "api_key must be a string, got a int"),
        ({"api_key": ""}, "api_key is empty"),
    ],
)
def test_bad_client_settings_are_refused_when_the_client_is_made(options, message):
    with pytest.raises(RerankError, match=message) as raised:
        Reranker(f"http://127.0.0.1:{free_port()}", "m", **{"api_key": "xf-test", **options})
    assert raised.value.exit_code == ExitCode.BAD_INPUT


def test_a_model_uid_that_is_not_a_string_and_a_huge_document_are_refused_before_sending():
    with pytest.raises(RerankError, match="model_uid must be a model's uid, got None") as raised:
        Reranker(f"http://127.0.0.1:{free_port()}", None, api_key="xf-test")
    assert raised.value.exit_code == ExitCode.BAD_INPUT
    with pytest.raises(RerankError, match="document 1 is 50,000,000 characters") as raised:
        _client().rerank("q", ["a", "x" * 50_000_000])
    assert raised.value.exit_code == ExitCode.BAD_INPUT


def test_an_endpoint_holding_a_password_is_refused_without_echoing_it(run):
    result = run("--endpoint", "http://admin:TOPSECRET@127.0.0.1:1", "status")
    assert result.exit_code == 2 and "holds a user name or password" in result.stderr
    assert "TOPSECRET" not in result.stdout + result.stderr


@pytest.mark.parametrize("setting", ["abc", "127.0.0.300", "8.8.8.8", "127.0.0.3:80"])
def test_a_source_address_this_machine_cannot_send_from_is_named(run, monkeypatch, setting):
    monkeypatch.setenv("XRERANK_SOURCE_ADDRESS", setting)
    result = run("--endpoint", f"http://127.0.0.1:{free_port()}", "status")
    assert result.exit_code == 2 and "XRERANK_SOURCE_ADDRESS" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "app, message",
    [
        ("", "app name '' is not allowed"),
        ("x" * 61, r"\.\.\. \(61 characters\)' is not allowed"),
        ("ａｂｃ", "ASCII letters"),
        ("..", "starting with a letter or digit"),
        ("my app", "ASCII letters"),
        ("SQ.revoked-10", "names ending in .revoked-N are xrerank's own"),
    ],
)
def test_app_names_are_plain_ascii_and_not_xreranks_own(app, message):
    from xrerank.xinference.keys import check_app_name

    with pytest.raises(BadInput, match=message):
        check_app_name(app)


def test_bench_stops_at_the_first_refusal_instead_of_earning_a_ban():
    from xrerank.perf.bench import Workload, run_bench

    sent = []

    def refused(query, documents):
        sent.append(query)
        raise RerankError("401: API key is disabled", ExitCode.UNREACHABLE, status=401)

    result = run_bench(refused, Workload(2, 4, concurrency=4, duration=2, warmup=0))
    assert len(sent) <= 4 and sum(result.errors.values()) == len(sent)  # one each at most, not 2 s of them


def test_every_client_failure_is_a_rerank_error():
    with pytest.raises(RerankError) as unreachable:
        _client().rerank("q", ["a"])
    assert unreachable.value.exit_code == ExitCode.UNREACHABLE
    with pytest.raises(RerankError) as bad_endpoint:
        Reranker("127.0.0.1:1", "m")
    assert bad_endpoint.value.exit_code == ExitCode.BAD_INPUT


def test_a_generator_of_documents_is_read_once_and_sent_whole(tmp_path):
    seen = []

    class Answer(QuietHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body["documents"])
            results = [{"index": i, "relevance_score": 0.5} for i in range(len(body["documents"]))]
            self.send_json(200, {"results": results})

    with LoopbackServer(Answer) as server:
        client = Reranker(server.url, "m", api_key="xf-test")
        results = client.rerank("q", (text for text in ["a", "b", "c"]))
    assert seen == [["a", "b", "c"]] and sorted(r.index for r in results) == [0, 1, 2]


def test_the_retry_window_bounds_the_whole_call_even_for_long_chunked_lists():
    client = Reranker(f"http://127.0.0.1:{free_port()}", "m", api_key="xf-test", retry_for=2, chunk_size=256)
    started = time.monotonic()
    with pytest.raises(RerankError):
        client.rerank("q", [f"document {i}" for i in range(10_000)])
    assert time.monotonic() - started < 6  # 2 s of retries, not 2 s per round of chunks


def test_the_client_without_a_key_names_api_key_in_its_refusal():
    class Refuse(QuietHandler):
        def do_POST(self):  # noqa: N802
            self.send_json(401, {"detail": "Could not validate credentials"})

    with LoopbackServer(Refuse) as server, pytest.raises(RerankError, match="pass api_key=") as raised:
        Reranker(server.url, "m").rerank("q", ["a"])
    assert raised.value.exit_code == ExitCode.UNREACHABLE and "--api-key" not in str(raised.value)


# --- the embedded server's pid ------------------------------------------------------------------


def _record(directory: Path, pid: int, port: int, started: float, identity: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {"pid": pid, "port": port, "host": "127.0.0.1", "auth": True, "started": started, "identity": identity}
    (directory / "server.json").write_text(json.dumps(state))


def test_server_stop_never_signals_a_process_that_is_not_the_server_it_started(run, tmp_path):
    import psutil

    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:  # the very process recorded, by start time and identity, but not a server: its command line
        started, identity = psutil.Process(bystander.pid).create_time(), process_identity(bystander.pid)
        _record(tmp_path / "server", bystander.pid, 9997, started, identity)
        result, answer = run.json("server", "stop", "--home", tmp_path / "server")
        assert result.exit_code == 0 and answer["outcome"] == "stale", answer
        assert "command line" in answer["detail"]
        time.sleep(0.5)
        assert bystander.poll() is None, "an unrelated process was signalled"
        result, answer = run.json("server", "status", "--home", tmp_path / "server")
        assert result.exit_code == 1 and answer["outcome"] == "not running"  # the stale record is gone
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()


@pytest.mark.parametrize("recorded_identity", [False, True], ids=["state-file-without-identity", "with-identity"])
def test_server_status_calls_a_recorded_pid_reused_by_another_process_stale(run, tmp_path, recorded_identity):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:  # the server started an hour ago, at another clock tick of this boot; `sleep` has its pid now
        identity = process_identity(bystander.pid)
        earlier = identity.rpartition("/")[0] + "/1" if recorded_identity else None
        _record(tmp_path / "server", bystander.pid, 9997, time.time() - 3600, earlier)
        result, answer = run.json("server", "status", "--home", tmp_path / "server")
        assert result.exit_code == 1 and answer["outcome"] == "stale" and "another process" in answer["detail"]
        assert "started at another time" in answer["detail"]
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()


def test_server_status_says_not_answering_when_the_server_process_does_not_answer(run, tmp_path):
    import socket

    import psutil

    held = socket.socket()  # bound, never listening: nothing else can take the port, nothing answers on it
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    # A process whose command line is the server's, and that never answers on its port.
    silent = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "xinference-local", "--port", str(port)],
        start_new_session=True,
    )
    try:  # recorded as xrerank records it; since then the wall clock was stepped by 30 s (NTP, a resume)
        started = psutil.Process(silent.pid).create_time() - 30
        _record(tmp_path / "server", silent.pid, port, started, process_identity(silent.pid))
        result, answer = run.json("server", "status", "--home", tmp_path / "server")
        assert result.exit_code == 1 and answer["outcome"] == "not answering", answer
    finally:
        os.killpg(silent.pid, signal.SIGKILL)
        silent.wait()
        held.close()


# --- third pass (issue 21): what an hour of hostile use found ---------------------------------


def _client_only(*args: str) -> subprocess.CompletedProcess:
    """xrerank as a client-only install runs it: without torch, transformers or sentence-transformers."""
    prelude = (
        "import sys; sys.modules.update(dict.fromkeys(['torch', 'transformers', 'sentence_transformers']));"
        "from xrerank.cli import main; sys.argv = ['xrerank', *sys.argv[1:]]; main()"
    )
    return subprocess.run([sys.executable, "-c", prelude, *args], capture_output=True, text=True, timeout=120)


def test_a_client_only_install_names_the_server_extra_for_what_needs_it(tmp_path):
    made = _client_only("make-demo-model", str(tmp_path / "demo"))
    assert made.returncode == 2 and "Traceback" not in made.stderr
    assert "xrerank[server]" in made.stderr and "torch" in made.stderr
    assert not (tmp_path / "demo").exists()
    port = free_port()  # nothing listens: the extra is checked before anything is sent
    benched = _client_only("--endpoint", f"http://127.0.0.1:{port}", "bench", "--model-uid", "m", "--in-process")
    assert benched.returncode == 2 and "bench --in-process needs the server side" in benched.stderr
    assert "Traceback" not in benched.stderr


def test_a_client_only_install_refuses_the_in_process_reference_in_one_line(tmp_path):
    code = (
        "import sys; sys.modules.update(dict.fromkeys(['torch', 'transformers', 'sentence_transformers']))\n"
        "from pathlib import Path\nfrom xrerank.checks.verify import Reference, reference_scores\n"
        "from xrerank.errors import BadInput\n"
        "try:\n    reference_scores(Reference(Path('.'), 512, 'float32', False), [('q', 'd')])\n"
        "except BadInput as exc:\n    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "refused:" in done.stdout and "xrerank[server]" in done.stdout, done.stderr


def test_state_files_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    from xrerank.files import write_json_atomically

    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    path = tmp_path / "state.json"
    write_json_atomically(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert len(synced) == 2 and synced[0].endswith(".tmp") and synced[1] == str(tmp_path)


def test_a_truncated_state_file_is_reported_with_its_name_not_taken_as_empty(tmp_path):
    from xrerank.files import DamagedState, read_json
    from xrerank.xinference import ledger
    from xrerank.xinference.records import Instance, Replica

    instance = Instance("m", "n", "READY", 1, 123, (Replica(0, "m-rep0", "READY", created_ts=123),))
    ledger.record_launch(tmp_path, "http://127.0.0.1:9", instance, {"threads_per_replica": 1})
    record = next((tmp_path / "deployments").glob("*.launch.json"))
    record.write_text(record.read_text()[:20])  # a power cut halfway through an unsynced write
    assert read_json(record) is None  # lenient readers rebuild what they can
    with pytest.raises(DamagedState, match=f"{record.name} is damaged.*delete it to go on"):
        ledger.launched_with(tmp_path, "http://127.0.0.1:9", instance)


def test_a_server_start_that_lost_a_port_race_is_told_from_other_failures(tmp_path):
    """xinference-local binds internal ports it picked itself; one taken meanwhile is worth a restart."""
    from xrerank.xinference.local import _lost_a_port_race

    log = tmp_path / "xinference.log"
    log.write_bytes(b"OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 45473): "
                    b"address already in use\n")  # fmt: skip
    start = log.stat().st_size
    assert _lost_a_port_race(log, 0)
    with log.open("ab") as stream:
        stream.write(b"ModuleNotFoundError: No module named 'torch'\n")  # this start's own failure
    assert not _lost_a_port_race(log, start)
