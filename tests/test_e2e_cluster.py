"""A real Xinference cluster on loopback: a supervisor and two workers, each started on free ports
and stopped by its pid. Placement, a worker killed under load, restore, and a full restart.

The tests run in file order and build on each other, as one cluster's life does:
  test_replicas_are_spread... deploys solo, spread and pinned, and picks the worker to kill;
  test_a_placement_change_rolls... rolls a model from that worker to the other (needs the pick);
  test_a_worker_dying... kills that worker under load (needs the models and the pick);
  test_deploy_heals... heals what the kill broke, the load still running (needs the kill);
  test_after_a_full_restart... restarts everything (needs solo.yaml from the first).
Run alone, a test whose prerequisite did not run is skipped and says which one it needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import DEMO, free_port
from loadgen import Load

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.supervisor: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "XINFERENCE_HOME": str(directory / "home"),
            "XINFERENCE_AUTH_ADVANCED": "0",
            "HF_HUB_OFFLINE": "1",
        }

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.directory / f"{name}.log").open("ab")
        # Its own process group: stopping it reaches worker_relaunch and the model processes.
        return subprocess.Popen(args, env=self.env, stdout=log, stderr=log, start_new_session=True)

    def start_supervisor(self) -> None:
        port = str(self.port)
        self.supervisor = self._spawn(
            "supervisor", str(BIN / "xinference-supervisor"), "-H", "127.0.0.1", "-p", port,
            "--supervisor-port", str(free_port()),
        )  # fmt: skip
        self._wait(lambda: requests.get(f"{self.endpoint}/v1/cluster/auth", timeout=2).ok, "supervisor")

    def start_worker(self, port: int | None = None) -> str:
        address = f"127.0.0.1:{port or free_port()}"
        self.workers[address] = self._spawn(
            f"worker-{address.split(':')[1]}", str(BIN / "xinference-worker"), "-e", self.endpoint,
            "-H", "127.0.0.1", "--worker-port", address.split(":")[1],
        )  # fmt: skip
        self._wait(lambda: address in self.worker_addresses(), f"worker {address}")
        return address

    def worker_addresses(self) -> list[str]:
        info = requests.get(f"{self.endpoint}/v1/cluster/info", timeout=5).json()
        return [node["ip_address"] for node in info if node["node_type"] == "Worker"]

    def kill_worker(self, address: str) -> None:
        """A machine that dies: SIGKILL to the worker's whole process group."""
        process = self.workers.pop(address)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in [*self.workers.values(), self.supervisor]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers.values(), self.supervisor]:
            if process is None:
                continue
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.workers.clear()

    @staticmethod
    def _wait(ready, what: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} did not come up in {seconds:g}s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_supervisor()
        cluster.start_worker()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def on_cluster(cluster, in_home):
    return ["--endpoint", cluster.endpoint]


def deployment(directory: Path, uid: str, replica: int, worker_ip: str | None = None) -> Path:
    text = DEMO.read_text().replace("model_uid: demo-reranker", f"model_uid: {uid}")
    text = text.replace(
        "  replica: 2\n", f"  replica: {replica}\n" + (f"  worker_ip: {worker_ip}\n" if worker_ip else "")
    )
    path = directory / f"{uid}.yaml"
    path.write_text(text)
    return path


FIGURES: dict[str, object] = {}
LOADS: dict[str, Load] = {}


def test_status_shows_each_worker_and_the_cluster_totals(run, on_cluster):
    result, status = run.json(*on_cluster, "status")
    assert result.exit_code == 0
    assert status["totals"]["workers"] == 2 and len(status["workers"]) == 2
    assert status["totals"]["cpu_count"] == sum(w["cpu_count"] for w in status["workers"])


def test_replicas_are_spread_across_workers_or_placed_on_a_named_one(run, on_cluster, cluster, home):
    result = run(*on_cluster, "deploy", deployment(home, "solo", 1))
    assert result.exit_code == 0, result.stderr
    result = run(*on_cluster, "deploy", deployment(home, "spread", 2))
    assert result.exit_code == 0, result.stderr
    result, status = run.json(*on_cluster, "status")
    models = {m["model_uid"]: m for m in status["models"]}
    assert len({r["worker"] for r in models["spread"]["replicas"]}) == 2  # one replica on each worker
    solo_worker = models["solo"]["replicas"][0]["worker"]
    survivor = next(address for address in cluster.worker_addresses() if address != solo_worker)
    result = run(*on_cluster, "deploy", deployment(home, "pinned", 1, worker_ip=survivor))
    assert result.exit_code == 0, result.stderr
    result, status = run.json(*on_cluster, "status")
    workers = {w["address"]: w["replicas"] for w in status["workers"]}
    assert "pinned#0" in workers[survivor] and "solo#0" in workers[solo_worker]
    FIGURES["doomed"], FIGURES["survivor"] = solo_worker, survivor
    # worker_ip as a bare host, as Xinference takes it: the first worker on that host
    bare = deployment(home, "bare", 1, worker_ip="127.0.0.1")
    assert run(*on_cluster, "deploy", bare).exit_code == 0
    result, again = run.json(*on_cluster, "deploy", bare)
    assert result.exit_code == 0 and again["changed"] is False  # its placement matches the bare host
    assert run(*on_cluster, "terminate", "--model-uid", "bare").exit_code == 0


def _needs(*keys: str) -> None:
    missing = [key for key in keys if key not in FIGURES]
    if missing:
        pytest.skip(f"needs the earlier tests of this file (they set {', '.join(missing)}); run the whole file")


def test_a_placement_change_rolls_replica_by_replica_under_load(run, on_cluster, cluster, home):
    """--replace rolls: a replica added on the new worker, READY, then the old one removed."""
    _needs("doomed", "survivor")
    doomed, survivor = FIGURES["doomed"], FIGURES["survivor"]
    assert run(*on_cluster, "deploy", deployment(home, "rolling", 1, worker_ip=doomed)).exit_code == 0
    moved = deployment(home, "rolling", 1, worker_ip=survivor)
    refused = run(*on_cluster, "deploy", moved)
    assert refused.exit_code == 1 and "roll: replace replicas one at a time" in refused.stderr
    with Load(cluster.endpoint, "rolling") as load:
        started = time.monotonic()
        result, answer = run.json(*on_cluster, "deploy", moved, "--replace")
        FIGURES["roll_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(1)
    assert result.exit_code == 0, result.stderr
    assert "roll" in answer["carried_out"] and answer["verification"]["passed"]
    assert load.failures == [] and load.answered == load.sent > 10, load.failures[:3]
    replicas = requests.get(f"{cluster.endpoint}/v1/models/rolling/replicas", timeout=10).json()
    assert [r["worker_address"] for r in replicas if r["status"] == "READY"] == [survivor]
    FIGURES.update(roll_sent=load.sent, roll_lost=len(load.failures))


def test_a_worker_dying_under_load_loses_no_request_and_status_sees_it_at_once(run, on_cluster, cluster):
    _needs("doomed")
    doomed = FIGURES["doomed"]
    spread = requests.get(f"{cluster.endpoint}/v1/models/spread/replicas", timeout=10).json()
    FIGURES["spread_healthy"] = [
        (r["replica_model_uid"], r["created_ts"]) for r in spread if r["worker_address"] != doomed
    ]
    load = LOADS["spread"] = Load(cluster.endpoint, "spread").start()  # runs on through the heal, next test
    time.sleep(2)
    cluster.kill_worker(doomed)
    killed = time.monotonic()
    detected = None
    while time.monotonic() - killed < 30:
        result = run(*on_cluster, "status", "--model-uid", "spread", "--json")
        assert result.stdout, f"status failed instead of reporting: {result.stderr}"
        status = json.loads(result.stdout)
        if result.exit_code != 0:
            detected = time.monotonic() - killed
            break
        time.sleep(0.2)
    supervisor_view = [r["status"] for r in requests.get(f"{cluster.endpoint}/v1/models/spread/replicas").json()]
    assert detected is not None, "status never reported the dead worker"
    problem = status["problems"][0]
    assert "UNREACHABLE" in problem and doomed in problem
    assert load.failures == [], load.failures[:3]
    FIGURES.update(detect_seconds=round(detected, 1), supervisor_view_at_detection=supervisor_view, lost=0)
    print(f"\ncluster failure figures: {json.dumps(FIGURES)}")


def test_deploy_heals_only_what_was_lost_and_relaunches_the_model_that_lived_on_the_dead_worker(
    run, on_cluster, cluster, home
):
    _needs("survivor", "lost", "spread_healthy")
    started = time.monotonic()
    result, answer = run.json(*on_cluster, "deploy", home / "spread.yaml")
    FIGURES["heal_seconds"] = round(time.monotonic() - started, 1)
    assert result.exit_code == 0, result.stderr
    assert "heal" in answer["carried_out"] and answer["verification"]["passed"]
    launch = next(step for step in answer["plan"] if step["step"] == "launch")
    assert launch["detail"].startswith("heal: remove 1 lost replica(s)")
    time.sleep(1)
    load = LOADS.pop("spread").stop()
    assert load.failures == [] and load.answered == load.sent > 20, load.failures[:3]
    spread = requests.get(f"{cluster.endpoint}/v1/models/spread/replicas", timeout=10).json()
    kept = [(r["replica_model_uid"], r["created_ts"]) for r in spread if r["status"] == "READY"]
    assert set(FIGURES["spread_healthy"]) <= set(kept) and len(kept) == 2  # the healthy one untouched
    started = time.monotonic()
    result, answer = run.json(*on_cluster, "deploy", home / "solo.yaml")  # its only replica died: launch again
    FIGURES["relaunch_seconds"] = round(time.monotonic() - started, 1)
    assert result.exit_code == 0, result.stderr
    assert "launch" in answer["carried_out"] and answer["verification"]["passed"]
    FIGURES.update(sent=load.sent, lost=len(load.failures))
    result, status = run.json(*on_cluster, "status")
    assert result.exit_code == 0, status["problems"]
    models = {m["model_uid"]: m for m in status["models"]}
    assert (models["spread"]["ready"], models["solo"]["ready"], models["pinned"]["ready"]) == (2, 1, 1)
    assert {r["worker"] for m in models.values() for r in m["replicas"] if r["status"] == "READY"} == {
        FIGURES["survivor"]
    }
    print(f"\ncluster failure figures: {json.dumps(FIGURES)}")


def test_after_a_full_restart_the_registration_is_back_and_deploy_relaunches(run, on_cluster, cluster, home):
    if not (home / "solo.yaml").exists():
        pytest.skip("needs test_replicas_are_spread_across_workers_or_placed_on_a_named_one to run first")
    cluster.stop()
    cluster.start_supervisor()
    cluster.start_worker()
    registered = requests.get(f"{cluster.endpoint}/v1/model_registrations/rerank").json()
    assert "demo-bge-reranker-v2-m3" in {r["model_name"] for r in registered}
    result, answer = run.json(*on_cluster, "deploy", home / "solo.yaml")
    assert result.exit_code == 0, result.stderr
    assert answer["carried_out"] == ["launch", "verify"]
    assert run(*on_cluster, "status", "--model-uid", "solo").exit_code == 0
