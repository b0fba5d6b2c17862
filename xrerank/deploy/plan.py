"""The deploy planner. Pure: what the deployment wants + what is observed -> the steps, in order.

Every step is "to do", "already so", or "refused" (a change that needs --replace, shown with the
difference). The launch step says how a running model is changed, most gentle first:
  scale    another replica count: replicas added or removed in place (no --replace needed);
  heal     replicas lost with their worker: those removed, new ones added, the healthy kept;
  roll     another placement or other GPUs (--replace): a new replica added, then an old one
           removed, one at a time, so the uid keeps answering;
  repair   a model Xinference marks ERROR after a failed change while its replicas answer: one replica
           added and removed again clears the mark (it would refuse a new launch of the uid forever);
  relaunch what new replicas cannot carry (another spec, threads, batching, fp16, env: Xinference
           4.1 gives an added replica the launch settings of an existing one): terminate and
           launch, the uid gone for ~20 s (--replace), said in the plan.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from xrerank.deploy.spec import spec_differences
from xrerank.xinference.records import Instance, Registration, Replica, on_worker

TODO = "to do"
DONE = "already so"
REFUSED = "refused"
STEP_NAMES = ("download", "spec", "register", "launch", "wait", "verify")


@dataclass(frozen=True)
class Desired:
    model_name: str
    model_uri: str
    uid: str
    replica: int
    spec: dict | None = None  # known once the weights are on disk
    gpu_idx: tuple[int, ...] = ()
    worker_ip: str | None = None
    verify: bool = True
    tuning: dict = field(default_factory=dict)  # LaunchSettings.tuning()


@dataclass(frozen=True)
class Observed:
    weights_complete: bool
    spec_file: dict | None = None
    registration: Registration | None = None
    instance: Instance | None = None
    replicas: list[Replica] = field(default_factory=list)  # checked for reachability
    verified: bool = False
    # Each replica's recorded tuning (ledger.replica_key -> tuning), None where xrerank did not launch it.
    launched_with: dict[str, dict | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    state: str
    detail: str
    replace: bool = False
    action: str = ""  # the launch step's: launch, relaunch, restore, scale, heal or roll


def plan(desired: Desired, observed: Observed, replace: bool = False) -> list[Step]:
    steps = [_download(observed), _spec(desired, observed)]
    register = _register(desired, observed, replace)
    launch = launch_step(desired, observed, replace, register_replaced=register.replace)
    steps += [register, launch, _wait(desired, observed, launch)]
    steps.append(_verify(desired, observed, steps))
    return steps


def refused(steps: list[Step]) -> list[Step]:
    return [step for step in steps if step.state == REFUSED]


def _download(observed: Observed) -> Step:
    if observed.weights_complete:
        return Step("download", DONE, "weights complete (manifest matches the files)")
    return Step("download", TODO, "fetch or generate the weights")


def _spec(desired: Desired, observed: Observed) -> Step:
    if desired.spec is not None and observed.spec_file == desired.spec:
        return Step("spec", DONE, "spec file up to date")
    return Step("spec", TODO, "write the custom rerank spec (version 2)")


def _register(desired: Desired, observed: Observed, replace: bool) -> Step:
    registered = observed.registration
    if registered is None:
        return Step("register", TODO, f"register {desired.model_name}")
    if desired.spec is not None:
        differences = spec_differences(registered.spec, desired.spec)
    else:
        uri = registered.model_uri
        differences = (
            [] if uri == desired.model_uri else [f"model_uri: registered {uri!r}, wanted {desired.model_uri!r}"]
        )
    if not differences:
        return Step("register", DONE, f"{desired.model_name} registered with the same spec")
    if replace:
        return Step("register", TODO, "replace the registration: " + "; ".join(differences), replace=True)
    return Step("register", REFUSED, f"{desired.model_name} is registered with another spec: " + "; ".join(differences))


def launch_step(desired: Desired, observed: Observed, replace: bool, register_replaced: bool = False) -> Step:
    """Is `desired.uid` running as wanted ("already so"), or how is it to be changed (see the module doc)?"""
    instance = observed.instance
    if instance is None or (instance.failed and not any(r.ready for r in observed.replicas)):
        return Step("launch", TODO, f"launch {desired.uid} with {desired.replica} replica(s)", action="launch")
    healthy = [r for r in observed.replicas if not r.lost]
    lost = [r for r in observed.replicas if r.lost]
    if lost and not healthy:
        where = ", ".join(r.describe() for r in lost)
        return Step("launch", TODO, f"restore: all {len(lost)} replicas lost ({where}); launch again", True, "restore")
    # A TERMINATED entry is a leftover the supervisor keeps listing; it takes no traffic.
    if any(r.status != "TERMINATED" for r in lost) or (lost and len(healthy) < desired.replica):
        # Damage to repair, not a change of the desired state: no --replace needed.
        where = ", ".join(r.describe() for r in lost)
        return Step(
            "launch", TODO,
            f"heal: remove {len(lost)} lost replica(s) ({where}), add {max(0, desired.replica - len(healthy))}; "
            f"the {len(healthy)} healthy one(s) stay",
            action="heal",
        )  # fmt: skip
    kept = tuning_differences(desired.tuning, observed.launched_with)
    if instance.model_name != desired.model_name:
        kept.insert(0, f"model: running {instance.model_name!r}, wanted {desired.model_name!r}")
    if register_replaced:
        kept.append("the registration changes")
    placement = placement_differences(desired, healthy)
    count = len(healthy) != desired.replica
    if kept:
        outage = f"{desired.uid} does not answer while it restarts, ~20 s"
        detail = "; ".join(kept + placement) + f": new replicas cannot carry this, so terminate and launch ({outage})"
        if replace:
            return Step("launch", TODO, "relaunch: " + detail, replace=True, action="relaunch")
        return Step("launch", REFUSED, f"{desired.uid} is running differently: " + detail)
    if placement:
        detail = "; ".join(placement) + f"; roll: replace replicas one at a time, {desired.uid} answering throughout"
        if count:
            detail += f" (and scale {len(healthy)} -> {desired.replica})"
        if replace:
            return Step("launch", TODO, "roll: " + detail, replace=True, action="roll")
        return Step("launch", REFUSED, f"{desired.uid} is running differently: " + detail)
    if count:
        return Step("launch", TODO, f"scale {len(healthy)} -> {desired.replica} replicas in place", action="scale")
    if instance.failed:
        return Step(
            "launch", TODO,
            f"repair: {desired.uid} is marked ERROR (a change of it failed) while {sum(r.ready for r in healthy)} "
            "replica(s) answer; adding a replica and removing it again clears the mark, the model answering "
            "throughout",
            action="repair",
        )  # fmt: skip
    return Step("launch", DONE, f"{desired.uid} runs {desired.model_name} with {desired.replica} replica(s)")


def placement_differences(desired: Desired, replicas: list[Replica]) -> list[str]:
    """Replicas on another worker, or on other GPUs, than the deployment wants."""
    differences = []
    if _beyond_the_shares(desired, replicas):
        running_gpus = sorted(i for r in replicas for i in r.gpu_idx)
        wanted = sorted(wanted_gpus(desired, len(replicas)))
        differences.append(f"GPUs: running {running_gpus}, wanted {wanted}")
    if desired.worker_ip:
        elsewhere = sorted({r.worker or "?" for r in replicas if not on_worker(r.worker, desired.worker_ip)})
        if elsewhere:
            differences.append(f"placement: replicas on {', '.join(elsewhere)}, wanted {desired.worker_ip}")
    return differences


def misplaced(desired: Desired, replicas: list[Replica]) -> list[Replica]:
    """The replicas a roll replaces: those on another worker than the deployment names, and those
    holding a GPU share the deployment has no room for (each share is held once; the oldest keep theirs)."""
    elsewhere = [r for r in replicas if desired.worker_ip and not on_worker(r.worker, desired.worker_ip)]
    placed = [r for r in replicas if r not in elsewhere]
    return elsewhere + _beyond_the_shares(desired, placed)


def _beyond_the_shares(desired: Desired, replicas: list[Replica]) -> list[Replica]:
    """Replicas whose GPUs are not one of the deployment's shares, or a share already held (none on CPU)."""
    if not desired.gpu_idx:
        return []
    free = Counter(gpu_shares(desired))
    beyond = []
    for replica in sorted(replicas, key=lambda r: r.id):
        share = tuple(replica.gpu_idx)
        if free[share] > 0:
            free[share] -= 1
        else:
            beyond.append(replica)
    return beyond


def wanted_gpus(desired: Desired, replicas: int) -> list[int]:
    """The GPU indexes `replicas` replicas would hold: the deployment's pattern, one share per replica."""
    return [index for chunk in gpu_shares(desired)[:replicas] for index in chunk]


def gpu_shares(desired: Desired) -> list[tuple[int, ...]]:
    """Each replica's GPUs, as Xinference splits gpu_idx: replica i gets the i-th equal share."""
    if not desired.gpu_idx:
        return []
    size = max(1, len(desired.gpu_idx) // desired.replica)
    return [tuple(desired.gpu_idx[start : start + size]) for start in range(0, len(desired.gpu_idx), size)]


def tuning_differences(wanted: dict, launched_with: dict[str, dict | None]) -> list[str]:
    """What the replicas were launched with (threads, batching, fp16, env) against what is wanted."""
    if any(tuning is None for tuning in launched_with.values()):
        return ["launched outside xrerank, so its threads, batching, fp16 and env are unknown"]
    differences: list[str] = []
    for tuning in launched_with.values():
        for key, value in wanted.items():
            line = f"{key}: running {tuning.get(key)}, wanted {value}"
            if tuning.get(key) != value and line not in differences:
                differences.append(line)
    return differences


def _wait(desired: Desired, observed: Observed, launch: Step) -> Step:
    if launch.state != DONE:
        return Step("wait", TODO, f"wait until all {desired.replica} replicas are READY")
    states = [r.status for r in observed.replicas if r.status != "TERMINATED"]  # leftovers take no traffic
    ready = sum(r.ready for r in observed.replicas)
    if ready >= desired.replica and len(states) == ready:
        return Step("wait", DONE, f"{ready}/{desired.replica} replicas READY")
    return Step("wait", TODO, f"{ready}/{desired.replica} replicas READY ({', '.join(map(str, states)) or 'none'})")


def _verify(desired: Desired, observed: Observed, earlier: list[Step]) -> Step:
    if not desired.verify:
        return Step("verify", DONE, "no verification asked")
    if observed.verified and all(step.state == DONE for step in earlier):
        return Step("verify", DONE, "verified since the instance started")
    return Step("verify", TODO, "check that the deployment ranks correctly")
