from xrerank.plan import DONE, REFUSED, TODO, Desired, Observed, plan

SPEC = {
    "version": 2,
    "model_name": "demo-x",
    "type": "normal",
    "language": ["en"],
    "max_tokens": 512,
    "model_specs": [{"model_format": "pytorch", "model_id": None, "model_uri": "/w", "quantization": "none"}],
}
DESIRED = Desired(model_name="demo-x", model_uri="/w", uid="demo", replica=2, spec=SPEC)
INSTANCE = {"model_name": "demo-x", "model_uid": "demo", "replica": 2, "status": "READY"}
READY = [{"status": "READY", "worker_address": "127.0.0.1:1", "gpu_idx": None}] * 2


def states(steps):
    return [(step.name, step.state) for step in steps]


def test_from_nothing_every_step_is_to_do():
    assert states(plan(DESIRED, Observed(weights_complete=False))) == [
        (name, TODO) for name in ("download", "spec", "register", "launch", "wait", "verify")
    ]


def test_everything_in_place_is_already_so():
    observed = Observed(True, SPEC, SPEC, INSTANCE, READY, verified=True)
    assert all(step.state == DONE for step in plan(DESIRED, observed))


def test_a_model_still_loading_is_waited_for_then_verified():
    loading = [READY[0], {"status": "CREATING", "worker_address": "127.0.0.1:1"}]
    steps = dict(states(plan(DESIRED, Observed(True, SPEC, SPEC, INSTANCE, loading, verified=False))))
    assert (steps["launch"], steps["wait"], steps["verify"]) == (DONE, TODO, TODO)


def test_a_failed_launch_is_launched_again():
    failed = {**INSTANCE, "status": "ERROR"}
    assert dict(states(plan(DESIRED, Observed(True, SPEC, SPEC, failed, [], False))))["launch"] == TODO


def test_another_replica_count_is_refused_with_the_difference():
    observed = Observed(True, SPEC, SPEC, {**INSTANCE, "replica": 1}, READY[:1], True)
    launch = plan(DESIRED, observed)[3]
    assert (launch.state, launch.detail) == (REFUSED, "demo is running differently: replicas: running 1, wanted 2")


def test_replace_turns_the_refusal_into_a_relaunch():
    observed = Observed(True, SPEC, SPEC, {**INSTANCE, "replica": 1}, READY[:1], True)
    launch = plan(DESIRED, observed, replace=True)[3]
    assert (launch.state, launch.replace) == (TODO, True)


def test_another_spec_is_refused_and_replacing_it_relaunches_the_model():
    other = {**SPEC, "max_tokens": 256}
    observed = Observed(True, SPEC, other, INSTANCE, READY, True)
    register = plan(DESIRED, observed)[2]
    assert register.state == REFUSED and "max_tokens: registered 256, wanted 512" in register.detail
    replaced = plan(DESIRED, observed, replace=True)
    assert (replaced[2].state, replaced[3].state, replaced[3].replace) == (TODO, TODO, True)


def test_placement_on_another_worker_is_a_difference():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, worker_ip="10.0.0.2")
    launch = plan(desired, Observed(True, SPEC, SPEC, INSTANCE, READY, True))[3]
    assert launch.state == REFUSED and "placement: replicas on 127.0.0.1:1, wanted 10.0.0.2" in launch.detail


def test_gpu_indexes_are_compared():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, gpu_idx=(0, 1))
    on_gpus = [{**READY[0], "gpu_idx": [0]}, {**READY[0], "gpu_idx": [1]}]
    assert plan(desired, Observed(True, SPEC, SPEC, INSTANCE, on_gpus, True))[3].state == DONE
    on_one = [{**READY[0], "gpu_idx": [0]}, {**READY[0], "gpu_idx": [0]}]
    assert plan(desired, Observed(True, SPEC, SPEC, INSTANCE, on_one, True))[3].state == REFUSED


def test_registered_before_the_weights_are_here_compares_the_uri():
    desired = Desired("demo-x", "/w", "demo", 2, spec=None)
    elsewhere = {**SPEC, "model_specs": [{**SPEC["model_specs"][0], "model_uri": "/elsewhere"}]}
    assert plan(desired, Observed(False, None, SPEC, None))[2].state == DONE
    assert plan(desired, Observed(False, None, elsewhere, None))[2].state == REFUSED


def test_no_verification_asked():
    desired = Desired("demo-x", "/w", "demo", 2, SPEC, verify=False)
    assert plan(desired, Observed(False))[5].state == DONE


TUNED = {"threads_per_replica": 1, "batch_size": None, "batch_interval": 0.0, "use_fp16": False, "env": {}}


def test_threads_and_batching_the_instance_was_launched_with_are_compared():
    desired = Desired(model_name="demo-x", model_uri="/w", uid="demo", replica=2, spec=SPEC, tuning=TUNED)
    launched = {**TUNED, "threads_per_replica": 2, "batch_interval": None}
    observed = Observed(True, SPEC, SPEC, INSTANCE, READY, True, launched_with=launched)
    refusal = plan(desired, observed)[3]
    assert refusal.state == REFUSED
    assert refusal.detail.endswith("threads_per_replica: running 2, wanted 1; batch_interval: running None, wanted 0.0")
    assert plan(desired, observed, replace=True)[3].state == TODO


def test_an_instance_launched_without_a_record_is_taken_as_it_is():
    desired = Desired(model_name="demo-x", model_uri="/w", uid="demo", replica=2, spec=SPEC, tuning=TUNED)
    observed = Observed(True, SPEC, SPEC, INSTANCE, READY, True, launched_with=None)
    assert plan(desired, observed)[3].state == DONE
