"""Zero-downtime changes on the real server, under load: scale 1 -> 3 -> 1 in place.

A client sends requests the whole time (xrerank.client with its default retries, as apps use it);
none may be lost, the instance keeps its uid and launch time, and the replica that was there first
keeps its identity. Heal and roll run on the two-worker cluster (test_e2e_cluster.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import DEMO
from loadgen import Load

pytestmark = pytest.mark.e2e
UID = "roll-reranker"


def _file(directory: Path, replica: int) -> Path:
    path = directory / "roll.yaml"
    path.write_text(
        DEMO.read_text()
        .replace("model_uid: demo-reranker", f"model_uid: {UID}")
        .replace("model_name: demo-bge-reranker-v2-m3", "model_name: roll-bge-reranker")
        .replace("replica: 2", f"replica: {replica}")
    )
    return path


def test_scale_1_to_3_to_1_in_place_under_load_loses_no_request(run, admin, xinference, home):
    result = run(*admin, "deploy", _file(home, 1))
    assert result.exit_code == 0, result.stderr
    server = xinference.admin()
    before = server.instance(UID)
    first = before.replicas[0]
    figures = {}
    with Load(xinference.endpoint, UID, xinference.credentials["api_key"]) as load:
        time.sleep(1)
        result, planned = run.json(*admin, "deploy", _file(home, 3), "--dry-run")
        launch = next(step for step in planned["plan"] if step["step"] == "launch")
        assert result.exit_code == 0 and (launch["state"], launch["detail"]) == (
            "to do",
            "scale 1 -> 3 replicas in place",
        )
        started = time.monotonic()
        result, answer = run.json(*admin, "deploy", _file(home, 3))  # no --replace: scaling is not a relaunch
        figures["scale_up_s"] = round(time.monotonic() - started, 1)
        assert result.exit_code == 0, result.stderr
        assert "scale" in answer["carried_out"] and answer["verification"]["passed"]
        assert sum(r.ready for r in server.replicas(UID)) == 3
        started = time.monotonic()
        result, scaled = run.json(*admin, "scale", "--model-uid", UID, "1")
        figures["scale_down_s"] = round(time.monotonic() - started, 1)
        assert result.exit_code == 0 and scaled["outcome"] == "scaled", result.stderr
        time.sleep(1)
    after = server.instance(UID)
    assert load.failures == [] and load.answered == load.sent > 20, (load.failures[:3], load.sent)
    assert (after.uid, after.created_ts) == (before.uid, before.created_ts)  # one instance throughout
    assert [(r.uid, r.created_ts) for r in after.replicas] == [(first.uid, first.created_ts)]
    # and the file that says 1 replica now matches what runs
    result, again = run.json(*admin, "deploy", _file(home, 1))
    assert result.exit_code == 0 and "launch" not in again["carried_out"] and "scale" not in again["carried_out"]
    figures.update(sent=load.sent, lost=len(load.failures))
    print(f"\nscale figures: {figures}")
    assert run(*admin, "terminate", "--model-uid", UID).exit_code == 0


def test_a_change_new_replicas_cannot_carry_says_so_and_states_the_outage(run, admin, xinference, home, tmp_path):
    path = _file(home, 1)
    assert run(*admin, "deploy", path).exit_code == 0
    path.write_text(path.read_text().replace("  device: cpu", "  device: cpu\n  threads_per_replica: 1"))
    result = run(*admin, "deploy", path)
    assert result.exit_code == 1
    assert "new replicas cannot carry this, so terminate and launch" in result.stderr and "~20 s" in result.stderr
    assert run(*admin, "terminate", "--model-uid", UID).exit_code == 0
