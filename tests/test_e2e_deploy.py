"""`xrerank deploy / verify / destroy` end to end against the real server, in the order a team uses them."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from conftest import DEMO

pytestmark = pytest.mark.e2e
UID = "demo-reranker"
NAME = "demo-bge-reranker-v2-m3"


def _variant(tmp_path, **launch) -> Path:
    text = DEMO.read_text()
    for key, value in launch.items():
        text = text.replace(f"  {key}: {'demo-reranker' if key == 'model_uid' else 2}\n", f"  {key}: {value}\n")
    path = tmp_path / "variant.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def demo(run, admin, xinference) -> None:
    """The demo deployment, running: what the tests before leave it in, deployed here when a test runs alone."""
    if xinference.admin().instance(UID) is None:
        result = run(*admin, "deploy", DEMO)
        assert result.exit_code == 0, result.stderr


def test_dry_run_from_nothing_plans_every_step_and_changes_nothing(run, admin, xinference, home):
    result, answer = run.json(*admin, "deploy", DEMO, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert [(s["step"], s["state"]) for s in answer["plan"]] == [
        (step, "to do") for step in ("download", "spec", "register", "launch", "wait", "verify")
    ]
    assert answer["carried_out"] == [] and answer["deployed"] is False
    assert xinference.admin().registration(NAME) is None and xinference.admin().instance(UID) is None
    assert not (home / "models").exists()


def _cli_env(xinference, home) -> dict:
    return {
        **os.environ,
        "XRERANK_HOME": str(home),
        "XRERANK_ENDPOINT": xinference.endpoint,
        "XRERANK_USERNAME": xinference.credentials["username"],
        "XRERANK_PASSWORD": xinference.credentials["password"],
    }


def test_three_deploys_at_once_from_nothing_take_turns_and_launch_once(admin, xinference, home):
    """Three CI jobs deploying one file: one does the work, the others find it done; all exit 0."""
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "xrerank", "deploy", str(DEMO), "--json"],
            env=_cli_env(xinference, home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]  # fmt: skip
    outputs = [job.communicate(timeout=600) for job in jobs]
    for job, (_, stderr) in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, stderr
        assert "Traceback" not in stderr
    answers = [json.loads(stdout) for stdout, _ in outputs]
    carried = sorted((a["carried_out"] for a in answers), key=len, reverse=True)
    assert carried == [["download", "spec", "register", "launch", "verify"], [], []]
    worked = next(a for a in answers if a["carried_out"])
    checks = {c["name"]: c for c in worked["verification"]["checks"]}
    assert checks["matches-in-process"]["passed"] and checks["every-replica"]["passed"]
    replicas = xinference.admin().replicas(UID)
    assert [r.status for r in replicas] == ["READY", "READY"]


def test_the_memory_estimate_matches_what_a_replica_uses(xinference, demo):
    import psutil

    from xrerank.checks.doctor import GIB, estimate_memory, parameters_from_config
    from xrerank.weights.generated import DEMO_CONFIG, DEMO_VOCAB_SIZE

    server_pid = json.loads((xinference.directory / "server.json").read_text())["pid"]
    replicas = [  # this test process's server's: another process's server may run a model of the same uid
        p
        for p in psutil.process_iter(["cmdline"])
        if " ".join(p.info["cmdline"] or []).startswith(f"Model: {UID}-rep")
        and server_pid in {parent.pid for parent in p.parents()}
    ]
    assert len(replicas) == 2
    measured = max(p.memory_info().rss for p in replicas)
    config = {**DEMO_CONFIG, "vocab_size": DEMO_VOCAB_SIZE}
    estimate = estimate_memory(config, parameters_from_config(config), 512, fp16=False, on_gpu=False).total
    print(f"demo replica: measured RSS {measured / GIB:.2f} GiB, estimated {estimate / GIB:.2f} GiB")
    assert 0.6 * measured <= estimate <= 1.6 * measured


def test_a_second_deploy_changes_nothing(run, admin, xinference, demo):
    created = xinference.admin().instance(UID).created_ts
    result, answer = run.json(*admin, "deploy", DEMO)
    assert result.exit_code == 0, result.stderr
    assert answer["changed"] is False and answer["carried_out"] == []
    assert {s["state"] for s in answer["plan"]} == {"already so"}
    assert xinference.admin().instance(UID).created_ts == created


def test_verify_mechanics_passes_and_quality_fails_on_random_weights(run, admin, demo):
    result, report = run.json(*admin, "verify", DEMO, "--suite", "mechanics")
    assert result.exit_code == 0 and report["passed"]
    result, report = run.json(*admin, "verify", "--model-uid", UID, "--suite", "quality")
    assert result.exit_code == 1 and not report["passed"]
    first = report["checks"][0]
    assert (first["name"], first["passed"]) == ("real-weights", False) and "random weights" in first["detail"]
    assert len([c for c in report["checks"] if c["name"].startswith("case:")]) == 7


def test_custom_cases_are_added_with_cases_file(run, admin, tmp_path, demo):
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - {name: mine, query: q, relevant: [a], traps: [b], margin: -1.0}\n")
    result, report = run.json(*admin, "verify", "--model-uid", UID, "--suite", "quality", "--cases", cases)
    assert [c["name"] for c in report["checks"]] == ["real-weights", "case:mine"]
    assert report["checks"][1]["passed"]  # a margin of -1 holds for any two scores in [0, 1]


def test_a_query_only_key_cannot_deploy_a_change_and_says_so_with_exit_3(run, admin, xinference, tmp_path):
    result = run(*xinference.key_args, "deploy", _variant(tmp_path, model_uid="demo-key-only"))
    assert result.exit_code == 3 and "may not register or launch" in result.stderr, result.stderr
    assert xinference.admin().instance("demo-key-only") is None


def test_two_replicas_sharing_gpu_0_go_through_deploy_to_the_servers_own_refusal(run, admin, xinference, tmp_path):
    """No GPU here: the preflight says so, and past it the server refuses GPU 0 itself."""
    shared = _variant(tmp_path, model_uid="demo-gpu")
    text = re.sub(r"(?m)^  device: cpu.*$", "  device: auto\n  gpu_idx: [0, 0]", shared.read_text())
    assert "gpu_idx: [0, 0]" in text
    shared.write_text(text)
    result = run(*admin, "deploy", shared)
    assert result.exit_code == 1 and "preflight: gpu_idx: GPU indexes [0] do not exist" in result.stderr
    result = run(*admin, "deploy", shared, "--skip-preflight", "--wait", "120")
    assert result.exit_code == 1 and "cannot use the GPUs with these indexes: [0]" in result.stderr
    assert xinference.admin().instance("demo-gpu") is None or xinference.admin().instance("demo-gpu").failed


def test_a_model_relaunched_outside_xrerank_is_not_taken_as_deployed(run, admin, xinference, home, tmp_path, demo):
    from xrerank.xinference.records import LaunchSettings

    outside = _variant(tmp_path, model_uid="demo-outside", replica=1)
    server = xinference.admin()
    server.launch(LaunchSettings(NAME, "demo-outside", replica=1, device="cpu", envs={"OMP_NUM_THREADS": "1"}), None)
    server.wait_until_ready("demo-outside", 1, time.monotonic() + 180)
    try:
        result = run(*admin, "deploy", outside)
        assert result.exit_code == 1 and "launched outside xrerank" in result.stderr
        result, answer = run.json(*admin, "deploy", outside, "--dry-run")
        assert result.exit_code == 1 and "refused" in {step["state"] for step in answer["plan"]}
    finally:
        server.terminate("demo-outside")


def test_another_replica_count_is_scaled_in_place_without_replace(run, admin, xinference, tmp_path, demo):
    created = xinference.admin().instance(UID).created_ts
    one_replica = _variant(tmp_path, replica=1)
    result, planned = run.json(*admin, "deploy", one_replica, "--dry-run")
    launch = next(step for step in planned["plan"] if step["step"] == "launch")
    assert result.exit_code == 0 and launch["detail"] == "scale 2 -> 1 replicas in place"
    result, answer = run.json(*admin, "deploy", one_replica)
    assert result.exit_code == 0, result.stderr
    assert answer["carried_out"] == ["scale", "verify"]
    instance = xinference.admin().instance(UID)
    assert [r.status for r in instance.replicas] == ["READY"] and instance.created_ts == created


def test_a_deploy_killed_midway_is_finished_by_the_next_run(run, admin, xinference, home, tmp_path):
    killed = _variant(tmp_path, model_uid="demo-killed")
    process = subprocess.Popen(
        [sys.executable, "-m", "xrerank", "deploy", str(killed)],
        env=_cli_env(xinference, home),
        stderr=subprocess.PIPE,
        text=True,
    )
    server = xinference.admin()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # after register, before every replica is READY
        instance = server.instance("demo-killed")
        if instance is not None and any(r.status == "CREATING" for r in instance.replicas):
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
    assert [r.status for r in server.replicas("demo-killed")] == ["READY", "READY"]
    assert run(*admin, "terminate", "--model-uid", "demo-killed").exit_code == 0


def test_ctrl_c_during_a_deploy_is_exit_130_and_the_next_run_resumes(run, admin, xinference, home, tmp_path):
    interrupted = _variant(tmp_path, model_uid="demo-interrupted", replica=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "xrerank", "deploy", str(interrupted)],
        env=_cli_env(xinference, home), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = xinference.admin()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the launch is under way
        instance = server.instance("demo-interrupted")
        if instance is not None and instance.replicas:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted: run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    result, answer = run.json(*admin, "deploy", interrupted)
    assert result.exit_code == 0, result.stderr
    assert answer["carried_out"][-1] == "verify" and answer["verification"]["passed"]
    assert run(*admin, "terminate", "--model-uid", "demo-interrupted").exit_code == 0


def test_destroy_leaves_no_registration_and_no_instance(run, admin, xinference, home, demo):
    result, answer = run.json(*admin, "destroy", DEMO)
    assert result.exit_code == 0, result.stderr
    assert (answer["terminate"], answer["unregister"], answer["weights"]) == ("terminated", "unregistered", "kept")
    server = xinference.admin()
    assert server.registration(NAME) is None and UID not in {m.uid for m in server.models()}
    assert (home / "models" / NAME / "model.safetensors").is_file()
    result, answer = run.json(*admin, "destroy", DEMO, "--purge-weights")
    assert result.exit_code == 0 and (answer["terminate"], answer["unregister"]) == ("absent", "absent")
    assert not (home / "models" / NAME).exists()


def test_purge_refuses_a_directory_xrerank_did_not_make_and_deletes_nothing(run, admin, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    path = tmp_path / "foreign.yaml"
    path.write_text(
        "version: 1\nweights: {source: modelscope, model_id: a/b, dir: ./precious}\n"
        "registration: {model_name: foreign-x}\nlaunch: {model_uid: foreign-x}\n"
    )
    result = run(*admin, "destroy", path, "--purge-weights")
    assert result.exit_code == 1 and "not deleting" in result.stderr and "no xrerank manifest" in result.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_launch_checks_capacity_first_and_launches_nothing_that_cannot_fit(run, admin, xinference, tmp_path):
    """8 replicas of a full-size bge-reranker-v2-m3 at its 8192 tokens: the preflight stops the launch."""
    import struct

    model = tmp_path / "big"
    model.mkdir()
    config = {
        "architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta", "hidden_size": 1024,
        "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 250002,
        "max_position_embeddings": 8194, "type_vocab_size": 1, "id2label": {"0": "LABEL_0"},
    }  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    (model / "tokenizer.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [567754752], "data_offsets": [0, 0]}}).encode()
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)  # the header only
    assert run(*admin, "register", "--model-dir", model, "--model-name", "big-x", "--no-persist").exit_code == 0
    try:
        result = run(*admin, "launch", "--model-name", "big-x", "--replica", "8", "--device", "cpu")
        assert result.exit_code == 1 and "preflight: memory" in result.stderr and "--skip-preflight" in result.stderr
        assert xinference.admin().instance("big-x") is None
    finally:
        run(*admin, "unregister", "--model-name", "big-x")


def test_the_server_home_and_its_secrets_are_private(xinference):
    assert oct(xinference.directory.stat().st_mode)[-3:] == "700"
    assert oct((xinference.directory / "home").stat().st_mode)[-3:] == "700"
    for name in ("credentials.json", "xinference.log", "server.json"):
        assert oct((xinference.directory / name).stat().st_mode)[-3:] == "600", name


def test_up_demo_from_the_built_wheel_outside_the_checkout(installed_wheel, tmp_path):
    """What `pipx install 'xrerank[server]'` gives: the wheel (configs inside it), run from elsewhere."""
    import tempfile

    from conftest import free_port

    home, elsewhere = tmp_path / "up-home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    user_home = tempfile.mkdtemp(prefix="xr-home-")  # short: xoscar's sockets live under $HOME/.xoscar
    env = {"PATH": "/usr/bin:/bin", "HOME": user_home, "XRERANK_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1"}  # fmt: skip
    xrerank = installed_wheel / "bin" / "xrerank"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(xrerank), *map(str, args)], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    port = free_port()
    try:
        result = run("up", "--demo", "--port", port)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"deployed {UID} on http://127.0.0.1:{port}" in result.stdout
        assert "sample ranking" in result.stdout and "meaningless" in result.stdout
        assert "xrerank connect" in result.stdout  # the way to hand it to an app
        credentials = json.loads((home / "server" / "credentials.json").read_text())
        server_log = (home / "server" / "xinference.log").read_text(errors="replace")
        for secret in (credentials["password"], credentials["api_key"]):
            assert secret not in result.stdout + result.stderr and secret not in server_log
        assert oct((home / "server" / "credentials.json").stat().st_mode)[-3:] == "600"
        again = run("up", "--demo", "--port", port, "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
        assert credentials["api_key"] not in again.stdout
        # The Cohere-v2 route started beside it, and connect finds it with no flag.
        connected = run("connect", "--json")
        route = json.loads(connected.stdout)["cohere_v2_base_url"]
        assert connected.returncode == 0 and route.startswith("http://127.0.0.1:"), connected.stderr
        route_pid = json.loads((home / "server" / "gateway.json").read_text())["pid"]
        assert requests.get(f"{route}/xrerank/gateway", timeout=10).json()["pid"] == route_pid
        # Killed, the route is reported lost, and the next `up` starts it again on its port.
        os.kill(route_pid, signal.SIGKILL)
        status = run("server", "status", "--json")
        assert json.loads(status.stdout)["cohere_v2_route"] == "not running", status.stdout
        assert "Cohere-v2 route is not running" in run("server", "status").stdout
        assert run("up", "--demo", "--port", port).returncode == 0
        route_pid = json.loads((home / "server" / "gateway.json").read_text())["pid"]
        assert requests.get(f"{route}/xrerank/gateway", timeout=10).json()["pid"] == route_pid
    finally:
        assert run("down").stdout.strip() == "stopped"
    assert run("down").stdout.strip() == "not running"
    assert not psutil.pid_exists(route_pid) and not (home / "server" / "gateway.json").exists()


def test_up_with_the_hub_unreachable_says_so_and_points_to_the_demo(run, admin, xinference, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    result = run(*admin, "up")
    assert result.exit_code == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the model hub" in errors[0] and "xrerank up --demo" in errors[0]
    assert xinference.admin().registration("custom-bge-reranker-v2-m3") is None
