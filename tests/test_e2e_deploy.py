"""`xrerank deploy / verify / destroy` end to end against the real server, in the order a team uses them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
UID = "demo-reranker"
NAME = "demo-bge-reranker-v2-m3"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy-home")


@pytest.fixture
def admin(xinference, home, monkeypatch):
    """The deploy commands' arguments; XRERANK_HOME stays the same across this module's tests."""
    monkeypatch.setenv("XRERANK_HOME", str(home))
    return xinference.admin_args


def _variant(tmp_path, **launch) -> Path:
    text = DEMO.read_text()
    for key, value in launch.items():
        text = text.replace(f"  {key}: {'demo-reranker' if key == 'model_uid' else 2}\n", f"  {key}: {value}\n")
    path = tmp_path / "variant.yaml"
    path.write_text(text)
    return path


def test_dry_run_from_nothing_plans_every_step_and_changes_nothing(run, admin, xinference, home):
    result, answer = run.json(*admin, "deploy", DEMO, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert [(s["step"], s["state"]) for s in answer["plan"]] == [
        (step, "to do") for step in ("download", "spec", "register", "launch", "wait", "verify")
    ]
    assert answer["carried_out"] == [] and answer["deployed"] is False
    assert xinference.admin().registration(NAME) is None and xinference.admin().instance(UID) is None
    assert not (home / "models").exists()


def test_deploy_from_nothing_ends_deployed_and_verified(run, admin, xinference):
    result, answer = run.json(*admin, "deploy", DEMO)
    assert result.exit_code == 0, result.stderr
    assert answer["carried_out"] == ["download", "spec", "register", "launch", "verify"]
    assert answer["verification"]["passed"]
    checks = {c["name"]: c for c in answer["verification"]["checks"]}
    assert checks["matches-in-process"]["passed"] and checks["every-replica"]["passed"]
    replicas = xinference.admin().replicas(UID)
    assert [r["status"] for r in replicas] == ["READY", "READY"]


def test_the_memory_estimate_matches_what_a_replica_uses(xinference):
    import psutil

    from xrerank.demo import DEMO_CONFIG, DEMO_VOCAB_SIZE
    from xrerank.doctor import GIB, estimate_memory, parameters_from_config

    replicas = [
        p for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []).startswith(f"Model: {UID}-rep")
    ]
    assert len(replicas) == 2
    measured = max(p.memory_info().rss for p in replicas)
    config = {**DEMO_CONFIG, "vocab_size": DEMO_VOCAB_SIZE}
    estimate = estimate_memory(config, parameters_from_config(config), 512, fp16=False, on_gpu=False).total
    print(f"demo replica: measured RSS {measured / GIB:.2f} GiB, estimated {estimate / GIB:.2f} GiB")
    assert 0.6 * measured <= estimate <= 1.6 * measured


def test_a_second_deploy_changes_nothing(run, admin, xinference):
    created = xinference.admin().instance(UID)["instance_created_ts"]
    result, answer = run.json(*admin, "deploy", DEMO)
    assert result.exit_code == 0, result.stderr
    assert answer["changed"] is False and answer["carried_out"] == []
    assert {s["state"] for s in answer["plan"]} == {"already so"}
    assert xinference.admin().instance(UID)["instance_created_ts"] == created


def test_verify_mechanics_passes_and_quality_fails_on_random_weights(run, admin):
    result, report = run.json(*admin, "verify", DEMO, "--suite", "mechanics")
    assert result.exit_code == 0 and report["passed"]
    result, report = run.json(*admin, "verify", "--model-uid", UID, "--suite", "quality")
    assert result.exit_code == 1 and not report["passed"]
    first = report["checks"][0]
    assert (first["name"], first["passed"]) == ("real-weights", False) and "random weights" in first["detail"]
    assert len([c for c in report["checks"] if c["name"].startswith("case:")]) == 7


def test_custom_cases_are_added_with_cases_file(run, admin, tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - {name: mine, query: q, relevant: [a], traps: [b], margin: -1.0}\n")
    result, report = run.json(*admin, "verify", "--model-uid", UID, "--suite", "quality", "--cases", cases)
    assert [c["name"] for c in report["checks"]] == ["real-weights", "case:mine"]
    assert report["checks"][1]["passed"]  # a margin of -1 holds for any two scores in [0, 1]


def test_another_replica_count_is_refused_then_replaced(run, admin, xinference, tmp_path):
    one_replica = _variant(tmp_path, replica=1)
    result = run(*admin, "deploy", one_replica)
    assert result.exit_code == 1
    assert "replicas: running 2, wanted 1" in result.stderr and "--replace" in result.stderr
    assert len(xinference.admin().replicas(UID)) == 2
    result, answer = run.json(*admin, "deploy", one_replica, "--replace")
    assert result.exit_code == 0, result.stderr
    assert answer["carried_out"] == ["launch", "verify"]
    assert [r["status"] for r in xinference.admin().replicas(UID)] == ["READY"]


def test_a_deploy_killed_midway_is_finished_by_the_next_run(run, admin, xinference, home, tmp_path):
    killed = _variant(tmp_path, model_uid="demo-killed")
    env = {
        **os.environ,
        "XRERANK_ENDPOINT": xinference.endpoint,
        "XRERANK_USERNAME": xinference.credentials["username"],
        "XRERANK_PASSWORD": xinference.credentials["password"],
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "xrerank", "deploy", str(killed)], env=env, stderr=subprocess.PIPE, text=True
    )
    server = xinference.admin()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # after register, before every replica is READY
        instance = server.instance("demo-killed")
        if instance is not None and any(r["status"] == "CREATING" for r in instance["replica_statuses"]):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    result, answer = run.json(*admin, "deploy", killed, "--dry-run")
    states = {s["step"]: s["state"] for s in answer["plan"]}
    assert (states["register"], states["launch"], states["verify"]) == ("already so", "already so", "to do")
    result, answer = run.json(*admin, "deploy", killed)
    assert result.exit_code == 0, result.stderr
    assert "register" not in answer["carried_out"] and "launch" not in answer["carried_out"]
    assert answer["carried_out"][-1] == "verify" and answer["verification"]["passed"]
    assert [r["status"] for r in server.replicas("demo-killed")] == ["READY", "READY"]
    assert run(*admin, "terminate", "--model-uid", "demo-killed").exit_code == 0


def test_destroy_leaves_no_registration_and_no_instance(run, admin, xinference, home):
    result, answer = run.json(*admin, "destroy", DEMO)
    assert result.exit_code == 0, result.stderr
    assert (answer["terminate"], answer["unregister"], answer["weights"]) == ("terminated", "unregistered", "kept")
    server = xinference.admin()
    assert server.registration(NAME) is None and UID not in {m["id"] for m in server.models()}
    assert (home / "models" / NAME / "model.safetensors").is_file()
    result, answer = run.json(*admin, "destroy", DEMO, "--purge-weights")
    assert result.exit_code == 0 and (answer["terminate"], answer["unregister"]) == ("absent", "absent")
    assert not (home / "models" / NAME).exists()


def test_up_demo_starts_a_server_deploys_and_shows_a_ranking(run, tmp_path, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("XRERANK_HOME", str(tmp_path / "up-home"))
    port = free_port()
    try:
        result = run("up", "--demo", "--port", port)
        assert result.exit_code == 0, result.stderr
        assert f"deployed {UID} on http://127.0.0.1:{port}" in result.stdout
        assert "sample ranking" in result.stdout and "meaningless" in result.stdout
        credentials = json.loads((tmp_path / "up-home" / "server" / "credentials.json").read_text())
        assert credentials["password"] not in result.stdout + result.stderr
        server_log = (tmp_path / "up-home" / "server" / "xinference.log").read_text(errors="replace")
        assert credentials["password"] not in server_log and credentials["api_key"] not in server_log
        assert oct((tmp_path / "up-home" / "server" / "credentials.json").stat().st_mode)[-3:] == "600"
        again = run("up", "--demo", "--port", port)
        assert again.exit_code == 0 and "(unchanged)" in again.stdout
    finally:
        assert run("down").stdout.strip() == "stopped"
    assert run("down").stdout.strip() == "not running"


def test_up_with_the_hub_unreachable_says_so_and_points_to_the_demo(run, admin, xinference, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    result = run(*admin, "up")
    assert result.exit_code == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the model hub" in errors[0] and "xrerank up --demo" in errors[0]
    assert xinference.admin().registration("custom-bge-reranker-v2-m3") is None
