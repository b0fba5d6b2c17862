"""The core workflow end to end through the CLI, against a real xinference-local (auth on).

download (real modelscope client, fake hub) -> spec -> register -> launch --replica 2 --device cpu
-> status -> rerank -> terminate -> unregister.
"""

import itertools
import json
import time

import pytest
from conftest import DEMO_REPO

from xrerank.client import Reranker

pytestmark = pytest.mark.e2e
MODEL_NAME = "custom-tiny-bge-reranker"
UID = "core-reranker"
DOCUMENTS = [
    "Artificial intelligence is the study of machines that learn.",
    "Apples are rich in dietary fibre.",
    "Paris is the capital of France.",
    "特斯拉上海超级工厂位于上海临港。",
    "hi",
]


@pytest.fixture(autouse=True)
def same_home(in_home):
    """xrerank records what it launches in XRERANK_HOME: this module's commands share one."""


@pytest.fixture(scope="module")
def pipeline(xinference, fake_hub, tmp_path_factory, home):
    """Download, write the spec, register and launch once; the tests below inspect the result."""
    from conftest import Cli

    mp = pytest.MonkeyPatch()
    mp.setenv("XRERANK_HOME", str(home))
    run = Cli()
    weights = tmp_path_factory.mktemp("core") / "weights"
    spec_file = weights.parent / "spec.json"
    outputs = {}
    outputs["download"] = run("download", DEMO_REPO, "--local-dir", weights, "--hub-endpoint", fake_hub.url)
    outputs["spec"] = run(
        "spec", "--model-dir", weights, "--model-name", MODEL_NAME, "--max-tokens", "512", "--output", spec_file
    )
    outputs["register"] = run(*xinference.admin_args, "register", "--spec", spec_file, "--json")
    outputs["launch"] = run(
        *xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", UID,
        "--replica", "2", "--device", "cpu", "--timeout", "240", "--json",
    )  # fmt: skip
    for step, result in outputs.items():
        assert result.exit_code == 0, f"{step}: {result.stderr}"
    # Right after launch returns, every request must succeed: no 503 from a replica still loading.
    strict = Reranker(xinference.endpoint, UID, api_key=xinference.credentials["api_key"], retry_for=0)
    right_after = [strict.rerank("What is AI?", DOCUMENTS) for _ in range(20)]
    mp.undo()
    yield {"run": run, "weights": weights, "spec_file": spec_file, "outputs": outputs, "right_after": right_after}
    xinference.admin().terminate(UID) if UID in {m.uid for m in xinference.admin().models()} else None


def test_every_step_succeeded(pipeline):
    for step, result in pipeline["outputs"].items():
        assert result.exit_code == 0, f"{step}: {result.stderr}"
    assert json.loads(pipeline["outputs"]["register"].stdout)["outcome"] == "registered"
    launched = json.loads(pipeline["outputs"]["launch"].stdout)
    assert (launched["outcome"], launched["replica"]) == ("launched", 2)


def test_twenty_requests_right_after_launch_all_succeed(pipeline):
    assert len(pipeline["right_after"]) == 20
    assert all(len(results) == len(DOCUMENTS) for results in pipeline["right_after"])


def test_served_scores_equal_the_in_process_cross_encoder(pipeline, xinference):
    from sentence_transformers import CrossEncoder

    result, answer = pipeline["run"].json(*xinference.key_args, "rerank", "--model-uid", UID, "What is AI?", *DOCUMENTS)
    assert result.exit_code == 0, result.stderr
    assert "meaningless" not in result.stderr  # weights from a hub, not the demo generator
    expected = CrossEncoder(str(pipeline["weights"]), device="cpu").predict([("What is AI?", d) for d in DOCUMENTS])
    served = {item["index"]: item["score"] for item in answer["results"]}
    assert sorted(served) == list(range(len(DOCUMENTS)))
    for index, score in served.items():
        assert score == pytest.approx(float(expected[index]), abs=1e-5)
    scores = [item["score"] for item in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(DOCUMENTS[item["index"]] == item["document"] for item in answer["results"])


def _replica_cpu_seconds(uid: str) -> list[float]:
    import psutil

    replicas = [
        p for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []).startswith(f"Model: {uid}-rep")
    ]
    return [sum(p.cpu_times()[:2]) for p in sorted(replicas, key=lambda p: " ".join(p.info["cmdline"]))]


def test_ten_thousand_documents_are_split_and_merged_into_the_single_calls_ranking(pipeline, xinference):
    import random

    words = "apple fibre paris capital france tesla factory shanghai great wall dynasty python code".split()
    rng = random.Random(7)
    documents = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(10_000)]
    key = xinference.credentials["api_key"]
    with Reranker(xinference.endpoint, UID, api_key=key, timeout=120, chunk_size=20_000) as whole:
        single = whole.rerank("What is the capital of France?", documents)
    with Reranker(xinference.endpoint, UID, api_key=key, timeout=120) as chunked:
        before = _replica_cpu_seconds(UID)
        merged = chunked.rerank("What is the capital of France?", documents)
        spent = [after - start for start, after in zip(before, _replica_cpu_seconds(UID), strict=True)]
        top = chunked.rerank("What is the capital of France?", documents, top_n=10)
    assert len(merged) == len(single) == 10_000
    single_scores = {r.index: r.score for r in single}
    assert all(abs(r.score - single_scores[r.index]) < 1e-5 for r in merged)
    # The single call's ranking, up to the order of scores closer than float32 noise.
    assert sorted(r.index for r in merged) == list(range(10_000))
    by_single = [single_scores[r.index] for r in merged]
    assert all(earlier >= later - 1e-5 for earlier, later in itertools.pairwise(by_single))
    assert [r.index for r in top] == [r.index for r in merged[:10]]
    assert all(documents[r.index] == r.document for r in merged[:100])
    # 40 chunks, 4 at a time: both replicas scored a fair share of them
    assert len(spent) == 2 and min(spent) > 0.25 * max(spent), spent


def test_a_launch_that_misses_its_deadline_is_exit_4_and_says_so(pipeline, xinference):
    result = pipeline["run"](
        *xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", "deadline-try", "--wait", "1",
        "--skip-preflight",
    )  # fmt: skip
    try:
        assert result.exit_code == 4 and "not ready before the deadline" in result.stderr
        assert result.stderr.count("error:") == 1
    finally:
        server = xinference.admin()
        server.wait_until_ready("deadline-try", 1, time.monotonic() + 120)  # it went on loading: stop it
        server.terminate("deadline-try")


def test_top_n_and_docs_from_stdin(pipeline, xinference):
    result, answer = pipeline["run"].json(
        *xinference.key_args, "rerank", "--model-uid", UID, "--top-n", "2", "--docs-file", "-", "What is AI?",
        input="\n".join(DOCUMENTS) + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert len(answer["results"]) == 2


def test_an_empty_query_is_bad_input(pipeline, xinference):
    result = pipeline["run"](*xinference.key_args, "rerank", "--model-uid", UID, "  ", "doc")
    assert result.exit_code == 2 and "query is empty" in result.stderr


def test_status_shows_every_replica_ready(pipeline, xinference):
    result, status = pipeline["run"].json(*xinference.admin_args, "status", "--model-uid", UID)
    assert result.exit_code == 0, result.stdout
    assert status["healthy"] and status["auth"] is True and status["version"] == "4.1.0"
    model = next(m for m in status["models"] if m["model_uid"] == UID)
    assert [r["status"] for r in model["replicas"]] == ["READY", "READY"]
    assert MODEL_NAME in status["registrations"]
    worker = status["workers"][0]
    assert {f"{UID}#0", f"{UID}#1"} <= set(worker["replicas"]) and worker["cpu_count"] >= 1


def test_status_with_an_api_key_sees_the_models_but_not_the_cluster(pipeline, xinference):
    result, status = pipeline["run"].json(*xinference.key_args, "status", "--model-uid", UID)
    assert result.exit_code == 0 and status["healthy"]
    assert status["version"] is None and status["workers"] == []
    assert [r["status"] for r in next(m for m in status["models"] if m["model_uid"] == UID)["replicas"]] == [
        "READY",
        "READY",
    ]


def test_the_same_register_and_launch_again_are_unchanged(pipeline, xinference):
    run = pipeline["run"]
    result, answer = run.json(*xinference.admin_args, "register", "--spec", pipeline["spec_file"])
    assert result.exit_code == 0 and answer["outcome"] == "unchanged"
    result, answer = run.json(
        *xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", UID, "--replica", "2"
    )
    assert result.exit_code == 0 and answer["outcome"] == "unchanged"


def test_another_spec_under_the_name_shows_the_difference(pipeline, xinference):
    result = pipeline["run"](
        *xinference.admin_args, "register", "--model-dir", pipeline["weights"], "--model-name", MODEL_NAME,
        "--max-tokens", "256",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "max_tokens: registered 512, wanted 256" in result.stderr and "--replace" in result.stderr


def test_another_replica_count_for_a_running_uid_is_refused(pipeline, xinference):
    result = pipeline["run"](
        *xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", UID, "--replica", "1"
    )
    assert result.exit_code == 1 and f"xrerank scale --model-uid {UID} 1" in result.stderr


def test_an_api_key_may_rerank_but_not_register(pipeline, xinference):
    result = pipeline["run"](
        *xinference.key_args, "register", "--model-dir", pipeline["weights"], "--model-name", MODEL_NAME,
        "--max-tokens", "256", "--replace",
    )  # fmt: skip
    assert result.exit_code == 3
    assert "API keys may only query and rerank" in result.stderr
    registered = xinference.admin().registration(MODEL_NAME)
    assert registered.max_tokens == 512  # nothing changed on the server


def test_no_credentials_and_a_wrong_password_are_exit_3(pipeline, xinference):
    result = pipeline["run"]("--endpoint", xinference.endpoint, "status")
    assert result.exit_code == 3 and "refused" in result.stderr
    result = pipeline["run"]("--endpoint", xinference.endpoint, "--username", "admin", "--password", "nope", "status")
    assert result.exit_code == 3 and result.stderr.count("\n") == 1 and "wrong username or password" in result.stderr


def test_gpu_indexes_on_a_gpu_less_worker_are_stopped_by_the_preflight_and_by_the_server(pipeline, xinference):
    args = (*xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", "gpu-try", "--wait", "60")
    result = pipeline["run"](*args, "--gpu-idx", "0")
    assert result.exit_code == 1 and "preflight: gpu_idx: GPU indexes [0] do not exist" in result.stderr
    # Two replicas sharing GPU 0: xrerank passes the repeated index on; the server has no GPU 0.
    result = pipeline["run"](*args, "--gpu-idx", "0,0", "--replica", "2", "--skip-preflight")
    assert result.exit_code == 1
    assert "cannot use the GPUs with these indexes: [0]" in result.stderr
    assert "gpu-try" not in {m.uid for m in xinference.admin().models()}


def test_a_gpu_count_on_a_gpu_less_worker_fails_with_the_servers_reason(pipeline, xinference):
    result = pipeline["run"](
        *xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", "gpu-count", "--n-gpu", "1",
        "--timeout", "60", "--skip-preflight",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not greater than the number of GPUs: 0" in result.stderr
    assert "--timeout on this command is now --wait" in result.stderr  # the old name still works, with a note


def test_fp16_on_a_cpu_only_server_is_refused_before_launching(pipeline, xinference):
    result = pipeline["run"](
        *xinference.admin_args, "launch", "--model-name", MODEL_NAME, "--model-uid", "fp16-try", "--use-fp16"
    )
    assert result.exit_code == 1 and "preflight: fp16" in result.stderr and "6x slower" in result.stderr
    assert xinference.admin().instance("fp16-try") is None


def test_an_expired_user_token_is_replaced_by_a_new_login(pipeline, xinference):
    server = xinference.admin()
    server.api._user_token = "expired.jwt.token"  # what a 30-minute token becomes
    assert server.version() == "4.1.0"
    assert server.api._user_token != "expired.jwt.token"


def test_teardown_is_idempotent_and_status_shows_it_gone(pipeline, xinference):
    run = pipeline["run"]
    assert run.json(*xinference.admin_args, "terminate", "--model-uid", UID)[1]["outcome"] == "terminated"
    assert run.json(*xinference.admin_args, "terminate", "--model-uid", UID)[1]["outcome"] == "absent"
    assert run.json(*xinference.admin_args, "unregister", "--model-name", MODEL_NAME)[1]["outcome"] == "unregistered"
    assert run.json(*xinference.admin_args, "unregister", "--model-name", MODEL_NAME)[1]["outcome"] == "absent"
    result, status = run.json(*xinference.admin_args, "status", "--model-uid", UID, "--model-name", MODEL_NAME)
    assert result.exit_code == 1 and not status["healthy"]
    assert f"{UID} is not running" in status["problems"] and f"{MODEL_NAME} is not registered" in status["problems"]
    assert UID not in {m["model_uid"] for m in status["models"]}


def test_no_secret_appears_in_any_output(pipeline, xinference):
    secrets = [xinference.credentials["password"], xinference.credentials["api_key"]]
    for step, result in pipeline["outputs"].items():
        for secret in secrets:
            assert secret not in result.stdout + result.stderr, step
