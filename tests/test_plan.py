from xrerank.deploy.plan import DONE, REFUSED, TODO, Desired, Observed, misplaced, plan
from xrerank.xinference.records import Instance, Registration, Replica

SPEC = {
    "version": 2,
    "model_name": "demo-x",
    "type": "normal",
    "language": ["en"],
    "max_tokens": 512,
    "model_specs": [{"model_format": "pytorch", "model_id": None, "model_uri": "/w", "quantization": "none"}],
}
REGISTERED = Registration("demo-x", SPEC)
DESIRED = Desired(model_name="demo-x", model_uri="/w", uid="demo", replica=2, spec=SPEC)
READY = [
    Replica(0, "demo-rep0", "READY", "127.0.0.1:1", created_ts=1),
    Replica(1, "demo-rep1", "READY", "127.0.0.1:1", created_ts=1),
]
INSTANCE = Instance("demo", "demo-x", "READY", 2, 100, tuple(READY))
TUNED = {"threads_per_replica": 1, "batch_size": None, "batch_interval": 0.0, "use_fp16": False, "env": {}}


def launched_with(tuning, replicas=READY):
    return {f"{r.uid}@{r.created_ts}": tuning for r in replicas}


def observed(registration=REGISTERED, instance=INSTANCE, replicas=READY, verified=True, tuning=None, **kwargs):
    return Observed(
        True, SPEC, registration, instance, replicas, verified, launched_with=launched_with(tuning or {}, replicas)
    )


def states(steps):
    return [(step.name, step.state) for step in steps]


def test_from_nothing_every_step_is_to_do():
    assert states(plan(DESIRED, Observed(weights_complete=False))) == [
        (name, TODO) for name in ("download", "spec", "register", "launch", "wait", "verify")
    ]


def test_everything_in_place_is_already_so():
    assert all(step.state == DONE for step in plan(DESIRED, observed()))


def test_a_model_still_loading_is_waited_for_then_verified():
    loading = [READY[0], Replica(1, "demo-rep1", "CREATING", "127.0.0.1:1", created_ts=1)]
    steps = dict(states(plan(DESIRED, observed(replicas=loading, verified=False))))
    assert (steps["launch"], steps["wait"], steps["verify"]) == (DONE, TODO, TODO)


def test_a_failed_launch_is_launched_again():
    failed = Instance("demo", "demo-x", "ERROR", 2, 100)
    assert dict(states(plan(DESIRED, observed(instance=failed, replicas=[], verified=False))))["launch"] == TODO


def test_another_replica_count_is_scaled_in_place_without_replace():
    one = Instance("demo", "demo-x", "READY", 1, 100, tuple(READY[:1]))
    launch = plan(DESIRED, observed(instance=one, replicas=READY[:1]))[3]
    assert (launch.state, launch.action, launch.detail) == (TODO, "scale", "scale 1 -> 2 replicas in place")
    assert not launch.replace


def test_settings_new_replicas_cannot_carry_need_replace_and_state_the_outage():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, tuning=TUNED)
    refused = plan(desired, observed(tuning={**TUNED, "use_fp16": True}))[3]
    assert refused.state == REFUSED and "terminate and launch (demo does not answer while it restarts" in refused.detail
    relaunch = plan(desired, observed(tuning={**TUNED, "use_fp16": True}), replace=True)[3]
    assert (relaunch.state, relaunch.action, relaunch.replace) == (TODO, "relaunch", True)


def test_replicas_lost_with_their_worker_are_healed_and_all_lost_is_a_relaunch():
    lost = Replica(1, "demo-rep1", "UNREACHABLE", "10.0.0.9:1", created_ts=1)
    heal = plan(DESIRED, observed(replicas=[READY[0], lost]))[3]
    assert (heal.state, heal.action, heal.replace) == (TODO, "heal", False)
    assert heal.detail.startswith("heal: remove 1 lost replica(s) (#1 UNREACHABLE on 10.0.0.9:1), add 1")
    gone = Replica(0, "demo-rep0", "TERMINATED", "10.0.0.9:1", created_ts=1)
    restore = plan(DESIRED, observed(replicas=[gone, lost]))[3]
    assert (restore.action, restore.replace) == ("restore", True)


def test_another_placement_rolls_with_replace():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, worker_ip="10.0.0.2")
    refused = plan(desired, observed())[3]
    assert refused.state == REFUSED and "roll: replace replicas one at a time" in refused.detail
    rolled = plan(desired, observed(), replace=True)[3]
    assert (rolled.state, rolled.action) == (TODO, "roll")


def test_another_spec_is_refused_and_replacing_it_relaunches_the_model():
    other = Registration("demo-x", {**SPEC, "max_tokens": 256})
    register = plan(DESIRED, observed(registration=other))[2]
    assert register.state == REFUSED and "max_tokens: registered 256, wanted 512" in register.detail
    replaced = plan(DESIRED, observed(registration=other), replace=True)
    assert (replaced[2].state, replaced[3].state, replaced[3].replace) == (TODO, TODO, True)


def test_placement_on_another_worker_is_a_difference():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, worker_ip="10.0.0.2")
    launch = plan(desired, observed())[3]
    assert launch.state == REFUSED and "placement: replicas on 127.0.0.1:1, wanted 10.0.0.2" in launch.detail
    assert plan(Desired("demo-x", "/w", "demo", 2, SPEC, worker_ip="127.0.0.1"), observed())[3].state == DONE


def test_gpu_indexes_are_compared_and_may_repeat():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, gpu_idx=(0, 1))
    on_gpus = [Replica(i, f"demo-rep{i}", "READY", "127.0.0.1:1", gpu_idx=(i,), created_ts=1) for i in (0, 1)]
    assert plan(desired, observed(replicas=on_gpus))[3].state == DONE
    on_one = [Replica(i, f"demo-rep{i}", "READY", "127.0.0.1:1", gpu_idx=(0,), created_ts=1) for i in (0, 1)]
    assert plan(desired, observed(replicas=on_one))[3].state == REFUSED
    shared = Desired("demo-x", "/w", "demo", 2, SPEC, gpu_idx=(0, 0))
    assert plan(shared, observed(replicas=on_one))[3].state == DONE


def test_a_roll_replaces_exactly_the_replicas_the_plan_found_misplaced():
    # Both replicas on GPU 0 of gpu_idx [0, 1]: the plan saw [0, 0] != [0, 1] and rolled, while the roll
    # judged each replica alone ("GPU 0 is one of the shares"), moved none, and the next deploy rolled again.
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, gpu_idx=(0, 1))
    on_one = [Replica(i, f"demo-rep{i}", "READY", "127.0.0.1:1", gpu_idx=(0,), created_ts=1) for i in (0, 1)]
    assert plan(desired, observed(replicas=on_one), replace=True)[3].action == "roll"
    assert [r.id for r in misplaced(desired, on_one)] == [1]  # the newer one; the oldest keeps GPU 0
    # One replica short, on a share that is free: nothing to move, scale adds the other share.
    one = [Replica(0, "demo-rep0", "READY", "127.0.0.1:1", gpu_idx=(1,), created_ts=1)]
    assert misplaced(desired, one) == [] and plan(desired, observed(replicas=one))[3].action == "scale"
    # On another worker: moved, and its share stays free for the replica that replaces it.
    pinned = Desired("demo-x", "/w", "demo", 2, SPEC, gpu_idx=(0, 1), worker_ip="10.0.0.2")
    mixed = [Replica(0, "demo-rep0", "READY", "10.0.0.2:1", gpu_idx=(1,), created_ts=1),
             Replica(1, "demo-rep1", "READY", "10.0.0.9:1", gpu_idx=(0,), created_ts=1)]  # fmt: skip
    assert [r.id for r in misplaced(pinned, mixed)] == [1]


def test_registered_before_the_weights_are_here_compares_the_uri():
    desired = Desired("demo-x", "/w", "demo", 2, spec=None)
    elsewhere = Registration("demo-x", {**SPEC, "model_specs": [{**SPEC["model_specs"][0], "model_uri": "/elsewhere"}]})
    assert plan(desired, Observed(False, None, REGISTERED, None))[2].state == DONE
    assert plan(desired, Observed(False, None, elsewhere, None))[2].state == REFUSED


def test_no_verification_asked():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, verify=False)
    assert plan(desired, Observed(False))[5].state == DONE


def test_threads_and_batching_the_instance_was_launched_with_are_compared():
    desired = Desired(model_name="demo-x", model_uri="/w", uid="demo", replica=2, spec=SPEC, tuning=TUNED)
    launched = {**TUNED, "threads_per_replica": 2, "batch_interval": None}
    refusal = plan(desired, observed(tuning=launched))[3]
    assert refusal.state == REFUSED
    assert "threads_per_replica: running 2, wanted 1; batch_interval: running None, wanted 0.0" in refusal.detail
    assert plan(desired, observed(tuning=launched), replace=True)[3].state == TODO
    assert plan(desired, observed(tuning=TUNED))[3].state == DONE


def test_an_instance_launched_outside_xrerank_has_unknown_settings_and_is_refused():
    desired = Desired(model_name="demo-x", model_uri="/w", uid="demo", replica=2, spec=SPEC, tuning=TUNED)
    unknown = Observed(
        True, SPEC, REGISTERED, INSTANCE, READY, True, launched_with={"demo-rep0@1": TUNED, "demo-rep1@1": None}
    )
    refusal = plan(desired, unknown)[3]
    assert refusal.state == REFUSED and "launched outside xrerank" in refusal.detail
    assert plan(desired, unknown, replace=True)[3].state == TODO
