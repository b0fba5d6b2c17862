"""Making the server hold what was asked: idempotent steps, and the deploy that chains them.

Each step checks what the server already has before it changes anything, so a re-run after a
failure or an interruption picks up where the last one stopped: a download resumes, a launch
that is still loading is waited for, and a deployment is reported verified only after its
verification passed against the instance that is running now. Runs on the same deployment
serialise on a lock, so a second one finds the first one's work done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xrerank.checks.doctor import FAIL, Finding, launch_preflight, scale_preflight
from xrerank.checks.verify import Reference, Report, run_suites
from xrerank.defaults import MAX_REPLICAS
from xrerank.deploy import replicas
from xrerank.deploy.plan import DONE, REFUSED, Desired, Observed, Step, launch_step, plan, refused
from xrerank.deploy.preflight import on_this_machine, preflight
from xrerank.deploy.spec import DEFAULT_LANGUAGES, build_spec, check_registration, check_spec_document, spec_differences
from xrerank.deploy.target import Target
from xrerank.errors import BadInput, Conflict, ExitCode, ServerError, TimedOut, XrerankError, worker_lost
from xrerank.families import Family, by_demo_id
from xrerank.families.remote_code import code_files
from xrerank.files import file_name, held_lock, held_shared_lock, read_json, write_json_atomically
from xrerank.weights.generated import DEMO_MODEL_ID, is_random_model
from xrerank.weights.modeldir import NotOurs, inspect_model_dir, purge, read_complete_manifest
from xrerank.xinference import ledger
from xrerank.xinference.records import CREATING, Instance, LaunchSettings, check_launch_settings
from xrerank.xinference.server import REMOTE_CODE_HINT, Xinference, threads_per_replica
from xrerank.xinference.serving import open_client
from xrerank.xinference.session import Session

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default progress sink: library code never prints."""


# --- single steps, shared by the imperative commands and by deploy ---------------------------


def register_model(server: Xinference, spec: dict, persist: bool = True, replace: bool = False) -> str:
    """Register `spec`: "registered", "unchanged" when the same spec is there, "replaced" with `replace`."""
    registered = server.registration(spec["model_name"])
    if registered is not None:
        differences = spec_differences(registered.spec, spec)
        if not differences:
            return "unchanged"
        if not replace:
            raise Conflict(
                f"{spec['model_name']} is registered with another spec ({'; '.join(differences)}); "
                "use --replace to change it"
            )
        server.unregister(spec["model_name"])
        try:
            server.register(spec, persist=persist)
        except XrerankError:
            server.register({k: v for k, v in registered.spec.items() if k != "is_builtin"}, persist=persist)
            raise
        return "replaced"
    server.register(spec, persist=persist)
    return "registered"


def unregister_model(server: Xinference, model_name: str) -> str:
    """Unregister: "unregistered", or "absent"; refused while a model runs it (Xinference would let it
    go, and the model would then fail every scale, heal and restart)."""
    registration = server.registration(model_name)
    if registration is None:
        return "absent"
    if registration.is_builtin:
        raise BadInput(f"{model_name} is one of Xinference's built-in models: it cannot be unregistered")
    users = models_running(server, model_name)
    if users:
        raise Conflict(
            f"{model_name} is in use by {_named(users)}: unregistering it would break their next scale or "
            f"restart; terminate them first (xrerank terminate --model-uid {users[0]})"
        )
    server.unregister(model_name)
    return "unregistered"


def unregister(session: Session, model_name: str, deadline: float) -> str:
    """`xrerank unregister`: once no xrerank process is starting a model on the registration."""
    with held_registration(session, model_name, deadline, removing=True):
        return unregister_model(session.server, model_name)


def models_running(server: Xinference, model_name: str, besides: str | None = None) -> list[str]:
    """The uids that run (or are launching) `model_name`, other than `besides`."""
    uids = {m.uid for m in server.models() if m.model_name == model_name}
    uids |= {i.uid for i in server.instances() if i.model_name == model_name and i.status == CREATING}
    return sorted(uids - {besides})


def _named(uids: list[str]) -> str:
    return ("model " if len(uids) == 1 else "models ") + ", ".join(uids)


def terminate_model(server: Xinference, model_uid: str) -> str:
    """Stop a model: "terminated", "cancelled" (it was still loading), or "absent"."""
    if model_uid in {model.uid for model in server.models()}:
        server.terminate(model_uid, timeout=TERMINATE_SECONDS)
        return "terminated"
    instance = server.instance(model_uid)
    if instance is None or not (instance.status == CREATING or any(r.status == CREATING for r in instance.replicas)):
        return "absent"
    # Still loading: Xinference lists it only once READY, and until then terminate answers "not found".
    server.cancel_launch(model_uid)
    if model_uid in {model.uid for model in server.models()}:  # its launch finished as the cancel went out
        server.terminate(model_uid, timeout=TERMINATE_SECONDS)
        return "terminated"
    return "cancelled"


TERMINATE_SECONDS = 120.0  # what one terminate request may take: replicas still loading are slow to stop


def terminate(session: Session, model_uid: str, deadline: float) -> str:
    """`xrerank terminate`: after any other xrerank change of the uid (a scale, a launch) finished, the
    model stopped, and what xrerank recorded of its launch forgotten (a cancel recorded as such)."""
    with held_deployment_lock(session, model_uid, deadline):
        return _terminate(session, model_uid)


def _terminate(session: Session, model_uid: str) -> str:
    outcome = terminate_model(session.server, model_uid)
    ledger.forget(session.home, session.endpoint, model_uid)
    cancelled = session.server.instance(model_uid) if outcome == "cancelled" else None
    if cancelled is not None:
        ledger.record_cancelled(session.home, session.endpoint, cancelled)
    return outcome


def launch_model(
    session: Session,
    settings: LaunchSettings,
    deadline: float,
    progress: Progress = _quiet,
    replace: bool = False,
) -> str:
    """Launch and wait until EVERY replica is READY; every launch is recorded in the ledger.

    Returns "launched", "resumed" (it was loading), "unchanged", "relaunched" (with `replace`),
    "healed" (lost replicas replaced in place, the healthy kept) or "restored" (every replica had
    been lost, e.g. with their worker, and the model was launched again)."""
    check_launch_settings(settings)
    server, uid = session.server, settings.uid
    instance = server.instance(uid)
    outcome = "launched"
    if instance is not None and (not instance.failed or serving(instance)):
        running = server.replicas(uid, check_reachable=True)
        desired = Desired(
            settings.model_name, "", uid, settings.replica, gpu_idx=settings.gpu_idx,
            worker_ip=settings.worker_ip, tuning=settings.tuning(),
        )  # fmt: skip
        observed = Observed(
            True, instance=instance, replicas=running,
            launched_with=ledger.launched_with(session.home, server.endpoint, instance),
        )  # fmt: skip
        step = launch_step(desired, observed, replace)
        if step.state == REFUSED:
            raise Conflict(f"{step.detail}; terminate it first, or use deploy --replace")
        if step.action in ("heal", "repair"):
            progress(step.detail)
            _change_in_place(session, desired, step.action, deadline, progress)
            return "healed" if step.action == "heal" else "repaired"
        if step.action in ("scale", "roll"):
            raise Conflict(
                f"{uid} runs {len(running)} replica(s) and launch does not change a running model: "
                f"`xrerank scale --model-uid {uid} {settings.replica}` or `xrerank deploy FILE` ({step.detail})"
            )
        if step.state == DONE:
            if all(r.ready for r in running) and len(running) >= settings.replica:
                return "unchanged"
            _wait(server, settings, deadline, progress)
            _record(session, settings)
            return "resumed"
        progress(f"terminating {uid} to relaunch it: {step.detail}")
        server.terminate(uid)
        outcome = "restored" if step.action == "restore" else "relaunched"
    threads = cpu_threads(server, settings)
    progress(f"launching {uid}: {settings.replica} replica(s)" + (f", {threads} thread(s) each" if threads else ""))
    ledger.record_pending(session.home, server.endpoint, uid, settings.tuning())
    server.launch(settings, threads)
    try:
        _wait(server, settings, deadline, progress)
    except ServerError as exc:
        if not _lost_the_cache_link_race(exc):
            raise
        # Xinference 4.1's cache_uri() checks for the model's cache link, then creates it: on the
        # first launch of a model, concurrent replicas race and one fails with FileExistsError.
        # The link exists now, so a second launch cannot race.
        progress(f"{uid}: Xinference raced creating its cache link for the first launch; launching again")
        _wait_until_gone(server, uid, deadline)
        server.launch(settings, threads)
        _wait(server, settings, deadline, progress)
    _record(session, settings)
    return outcome


def serving(instance: Instance) -> bool:
    """Does a model marked ERROR still answer? Xinference marks a running model ERROR when a change of
    it fails (a replica add whose registration is gone), and keeps its READY replicas serving."""
    return any(replica.ready for replica in instance.replicas)


def _record(session: Session, settings: LaunchSettings) -> None:
    instance = session.server.instance(settings.uid)
    if instance is not None:
        ledger.record_launch(session.home, session.endpoint, instance, settings.tuning())


def _lost_the_cache_link_race(error: ServerError) -> bool:
    text = str(error)
    return "File exists" in text and "/cache/" in text


def _wait_until_gone(server: Xinference, uid: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        instance = server.instance(uid)
        if instance is None or instance.failed:
            return
        time.sleep(0.5)
    raise TimedOut(f"{uid} was not terminated before the deadline")


def _wait(server: Xinference, settings: LaunchSettings, deadline: float, progress: Progress) -> None:
    last: list[str] = []

    def report(states: list[str]) -> None:
        if states != last:
            last[:] = states
            ready = states.count("READY")
            progress(f"{settings.uid}: {ready}/{settings.replica} replicas READY ({', '.join(states) or 'scheduling'})")

    try:
        server.wait_until_ready(settings.uid, settings.replica, deadline, report)
    except ServerError as exc:
        # A half-started model would answer some requests and fail others: take it down whole.
        with contextlib.suppress(XrerankError):
            server.terminate(settings.uid)
        if REMOTE_CODE_HINT not in str(exc) and _ships_code(server, settings.model_name):
            # The server gives no reason for this one through its API; the weights here tell it.
            raise ServerError(f"{exc}; likely cause: {REMOTE_CODE_HINT}", exc.status) from None
        raise


def _ships_code(server: Xinference, model_name: str) -> bool:
    with contextlib.suppress(XrerankError, OSError):
        registration = server.registration(model_name)
        if registration and registration.model_uri and Path(registration.model_uri).is_dir():
            return inspect_model_dir(registration.model_uri).family.runs_repository_code
    return False


def cpu_threads(server: Xinference, settings: LaunchSettings) -> int | None:
    """Threads per replica when the replicas run on CPU; None when they get GPUs."""
    if settings.wants_gpu:
        return None
    workers = settings.target_workers(server.workers())
    if not workers:
        return settings.threads_per_replica
    on_cpu = settings.device == "cpu" or all(w.gpu_count == 0 for w in workers)
    if not on_cpu:
        return None
    if settings.use_fp16:
        raise BadInput("fp16 on CPU runs about 6x slower than fp32 and the target has no GPU: drop fp16")
    if settings.threads_per_replica:
        return settings.threads_per_replica
    cores = min(int(w.cpu_count or 1) for w in workers)
    return threads_per_replica(cores, settings.replicas_per_worker(len(workers)))


def checked_launch(
    session: Session, settings: LaunchSettings, deadline: float, progress: Progress, preflight_checks: bool = True
) -> str:
    """`xrerank launch`: the capacity checks deploy runs, then the launch, holding the model's lock."""
    check_launch_settings(settings)
    with (
        held_deployment_lock(session, settings.uid, deadline, progress),
        held_registration(session, settings.model_name, deadline, progress=progress),
    ):
        if preflight_checks:
            progress("preflight: checking the server and the launch against its workers")
            _raise_on_failures(launch_preflight(session.server, settings, machine=False))
        return launch_model(session, settings, deadline, progress)


def checked_scale(
    session: Session, model_uid: str, count: int, deadline: float, progress: Progress, preflight_checks: bool = True
) -> str:
    """`xrerank scale`: room for the replicas it adds on the workers (as deploy checks), then the scale,
    holding the model's lock so that a deploy or another scale of it waits its turn."""
    if not 1 <= count <= MAX_REPLICAS:
        raise BadInput(f"replica count {count} is out of range: 1 to {MAX_REPLICAS}")
    with held_deployment_lock(session, model_uid, deadline, progress):
        instance = session.server.instance(model_uid)
        if instance is None:
            raise XrerankError(f"{model_uid} is not running on {session.endpoint}; deploy or launch it first")
        with held_registration(session, instance.model_name, deadline, progress=progress):
            if preflight_checks:
                tunings = ledger.launched_with(session.home, session.endpoint, instance).values()
                fp16 = any(t and t.get("use_fp16") for t in tunings)
                progress("preflight: checking room for the new replicas on the workers")
                _raise_on_failures(scale_preflight(session.server, model_uid, count, fp16))
            return replicas.scale(session, model_uid, count, deadline, progress)


def spec_for_directory(
    model_dir: Path, model_name: str | None, languages: tuple[str, ...], max_tokens: int | None,
    trust_remote_code: bool = False,
) -> dict:  # fmt: skip
    """The spec for a model directory (`xrerank spec`, `register --model-dir`)."""
    if not model_name:
        raise BadInput("--model-name is required with --model-dir")
    manifest = read_complete_manifest(model_dir.resolve()) or {}
    model = inspect_model_dir(model_dir)
    return build_spec(model, model_name, languages, max_tokens, manifest.get("model_id"), trust_remote_code)


def load_spec_file(path: Path, progress: Progress = _quiet, trust_remote_code: bool = False) -> dict:
    """A spec file, checked as far as this machine can: the v2 shape, the name, the weights if here."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise BadInput(f"{path} is not valid JSON: {exc}") from None
    uri = check_spec_document(document, str(path))
    if Path(uri).exists():
        model = inspect_model_dir(uri)
        tokens = document.get("max_tokens")
        if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool)):
            raise BadInput(f"{path}: max_tokens {tokens!r} is not a whole number")
        languages = document.get("language") or DEFAULT_LANGUAGES
        build_spec(model, document["model_name"], languages, tokens, trust_remote_code=trust_remote_code)  # checks
        if document.get("type", "unknown") not in (model.family.xinference_type, "unknown"):
            raise BadInput(
                f"{path}: type {document.get('type')!r}, but {uri} is a {model.family.title}: "
                f"Xinference 4.1 scores it right only as type {model.family.xinference_type!r}"
            )
    else:
        progress(f"note: {uri} is not on this machine; the server will check it")
    return document


# --- verification -----------------------------------------------------------------------------


def verify_model(
    session: Session,
    model_uid: str,
    suite: str,
    cases_file: Path | None = None,
    dtype: str | None = None,
) -> Report:
    """Run the suites against a running model; what they need (weights, limits) is read from the server.

    `dtype` is the replicas' ("float16" when launched with fp16); by default what xrerank recorded
    when it launched them, else float32."""
    server = session.server
    instance = server.instance(model_uid)
    if instance is None or instance.status != "READY":
        raise XrerankError(f"{model_uid} is not running; deploy or launch it first")
    registration = server.registration(instance.model_name)
    model_dir = Path(registration.model_uri) if registration and registration.model_uri else None
    readable = model_dir is not None and (model_dir / "config.json").is_file()
    max_tokens = registration.max_tokens if registration else None
    running = server.replicas(model_uid)
    reference = (
        Reference(model_dir, max_tokens, dtype or served_dtype(session, instance), any(r.gpu_idx for r in running))
        if readable and model_dir is not None
        else None
    )
    with open_client(session, model_uid) as client:
        return run_suites(
            client,
            suite,
            replicas=max(instance.replica, len(running)),
            reference=reference,
            max_tokens=max_tokens,
            demo=is_random_model(registration.model_id if registration else None),
            cases_file=cases_file,
        )


def served_dtype(session: Session, instance: Instance) -> str:
    """The replicas' dtype as xrerank launched them: float16 if all of them run fp16, else float32."""
    tunings = ledger.launched_with(session.home, session.endpoint, instance).values()
    return "float16" if tunings and all(t and t.get("use_fp16") for t in tunings) else "float32"


# --- the declarative deploy ---------------------------------------------------------------------


def known_family(target: Target) -> tuple[Family, list[str]] | None:
    """The family of the deployment's model and the code files it runs: from the weights once they are
    here, or from a demo's model_id before it is generated; None while a hub's weights are not here."""
    model_id = target.deployment.weights.model_id
    if target.source.is_complete(target.weights, model_id):
        model = inspect_model_dir(target.weights)
        return model.family, code_files(model.config, model.path) if model.family.runs_repository_code else []
    family = by_demo_id(model_id or DEMO_MODEL_ID) if target.demo else None
    if family is None:
        return None
    return family, family.demo_code_files(target.weights) if family.runs_repository_code else []


def family_view(target: Target) -> dict | None:
    """The family of the deployment's model, the path Xinference scores it by, and the code that runs."""
    known = known_family(target)
    if known is None:
        return None
    family, runs = known
    return {"name": family.name, "title": family.title, "route": family.route, "runs_code": runs}


def check_family_rules(target: Target) -> None:
    """The name rule and the code opt-in before the weights are here, as soon as the family is known (a
    demo's, from its model_id): a dry run too. Once the weights are here, `desired_spec` checks them."""
    if target.source.is_complete(target.weights, target.deployment.weights.model_id):
        return
    known = known_family(target)
    if known is not None:
        registration = target.deployment.registration
        check_registration(known[0], registration.model_name, registration.trust_remote_code, known[1], target.weights)


def desired_spec(target: Target) -> dict | None:
    """The spec the deployment wants, once the weights are complete on disk; else None."""
    if not target.source.is_complete(target.weights, target.deployment.weights.model_id):
        return None
    manifest = read_complete_manifest(target.weights) or {}
    registration = target.deployment.registration
    return build_spec(
        inspect_model_dir(target.weights),
        registration.model_name,
        registration.language,
        registration.max_tokens,
        model_id=manifest.get("model_id") or target.deployment.weights.model_id,
        trust_remote_code=registration.trust_remote_code,
    )


def observe(session: Session, target: Target) -> tuple[Desired, Observed]:
    server = session.server
    spec = desired_spec(target)
    uid = target.settings.uid
    instance = server.instance(uid)
    replicas = (
        server.replicas(uid, check_reachable=True)
        if instance is not None and (not instance.failed or serving(instance))
        else []
    )
    desired = Desired(
        model_name=target.settings.model_name,
        model_uri=str(target.weights),
        uid=uid,
        replica=target.settings.replica,
        spec=spec,
        gpu_idx=target.settings.gpu_idx,
        worker_ip=target.settings.worker_ip,
        verify=target.deployment.verify.suite != "none",
        tuning=target.settings.tuning(),
    )
    observed = Observed(
        weights_complete=spec is not None,
        spec_file=read_json(target.spec_path),
        registration=server.registration(target.settings.model_name),
        instance=instance,
        replicas=replicas,
        verified=spec is not None
        and ledger.is_verified(session.home, server.endpoint, instance, _fingerprint(target, spec)),
        launched_with=ledger.launched_with(session.home, server.endpoint, instance),
    )
    return desired, observed


@dataclass
class DeployResult:
    steps: list[Step]
    carried_out: list[str]
    verification: Report | None
    uid: str
    endpoint: str
    dry_run: bool = False
    preflight_failed: list[Finding] = field(default_factory=list)  # a dry run's: what the real run would refuse
    family: dict | None = None  # the model's family and the path Xinference scores it by, once the weights are here

    @property
    def changed(self) -> bool:
        return bool(self.carried_out)

    @property
    def refused(self) -> list[Step]:
        return refused(self.steps)

    def as_dict(self) -> dict:
        return {
            "endpoint": self.endpoint,
            "model_uid": self.uid,
            "dry_run": self.dry_run,
            "deployed": not self.dry_run,
            "changed": self.changed,
            "plan": [{"step": s.name, "state": s.state, "detail": s.detail} for s in self.steps],
            "carried_out": self.carried_out,
            "verification": self.verification.as_dict() if self.verification else None,
            "family": self.family,
            **({"preflight": [f.as_dict() for f in self.preflight_failed]} if self.dry_run else {}),
        }


def deploy(
    session: Session,
    target: Target,
    deadline: float,
    replace: bool = False,
    dry_run: bool = False,
    progress: Progress = _quiet,
    preflight_checks: bool = True,
) -> DeployResult:
    """Compare, plan, and carry out the plan in order; the plan is redone once the weights are known."""
    server = session.server
    check_family_rules(target)
    if dry_run:
        desired, observed = observe(session, target)
        steps = plan(desired, observed, replace=replace)
        result = DeployResult(steps, [], None, target.settings.uid, server.endpoint, dry_run=True)
        result.family = family_view(target)
        if preflight_checks and _changes_replicas(steps):
            checks = preflight(server, target, machine=False, adding=_replicas_added(desired, observed, steps))
            result.preflight_failed = [f for f in checks if f.level == FAIL]
        return result
    with (
        held_deployment_lock(session, target.settings.uid, deadline, progress),
        held_registration(session, target.settings.model_name, deadline, progress=progress),
    ):
        return _deploy(session, target, deadline, replace, progress, preflight_checks)


def _changes_replicas(steps: list[Step]) -> bool:
    return any(s.state != DONE for s in steps if s.name in ("register", "launch", "wait"))


def _replicas_added(desired: Desired, observed: Observed, steps: list[Step]) -> int | None:
    """How many replicas the plan adds beside those that keep running (None: all of them, from nothing)."""
    action = next(s.action for s in steps if s.name == "launch")
    healthy = len([r for r in observed.replicas if not r.lost])
    if action in ("scale", "heal", "repair"):
        return max(0, desired.replica - healthy) or (1 if action == "repair" else 0)
    if action == "roll":
        return 1  # one new replica at a time, before an old one goes
    return None


def _deploy(
    session: Session, target: Target, deadline: float, replace: bool, progress: Progress, preflight_checks: bool
) -> DeployResult:
    server = session.server
    desired, observed = _observe_settled(session, target, deadline, progress)
    steps = plan(desired, observed, replace=replace)
    result = DeployResult(steps, [], None, target.settings.uid, server.endpoint)
    result.family = family_view(target)
    _raise_if_refused(steps)
    if preflight_checks and _changes_replicas(steps):
        here = on_this_machine(server)
        progress("preflight: checking the server, the deployment" + (" and this machine" if here else ""))
        _raise_on_failures(preflight(server, target, machine=here, adding=_replicas_added(desired, observed, steps)))
    if steps[0].state != DONE:
        progress("download: " + steps[0].detail)
        ensure_weights(target, deadline, progress)
        result.carried_out.append("download")
        result.family = family_view(target)
        steps = plan(*observe(session, target), replace=replace)
        _raise_if_refused(steps)
    spec = desired_spec(target)
    if spec is None:
        raise XrerankError(f"the weights in {target.weights} are not complete after the download step")
    by_name = {step.name: step for step in steps}
    if by_name["spec"].state != DONE:
        target.spec_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(target.spec_path, spec)
        result.carried_out.append("spec")
    if by_name["register"].state != DONE:
        progress("register: " + by_name["register"].detail)
        register_model(server, spec, persist=target.deployment.registration.persist, replace=replace)
        result.carried_out.append("register")
    launch = by_name["launch"]
    if launch.action in ("scale", "heal", "roll", "repair"):
        progress(f"{launch.action}: {launch.detail}")
        _change_in_place(session, desired, launch.action, deadline, progress)
        result.carried_out.append(launch.action)
    elif launch.state != DONE or by_name["wait"].state != DONE:
        outcome = launch_model(session, target.settings, deadline, progress, replace=launch.replace)
        result.carried_out.append("launch" if outcome != "resumed" else "wait")
    if by_name["verify"].state != DONE:
        result.verification = _verify_and_stamp(session, target, spec, progress)
        result.carried_out.append("verify")
    return result


def _observe_settled(session: Session, target: Target, deadline: float, progress: Progress) -> tuple[Desired, Observed]:
    """What the server holds, once it can say: while a worker that just died is still on its books,
    the supervisor answers 500 to anything that asks every worker (~20 s, until it notices)."""
    said = False
    while True:
        try:
            return observe(session, target)
        except ServerError as exc:
            if not worker_lost(exc) or time.monotonic() > deadline:
                raise
            if not said:
                progress(f"a worker does not answer the supervisor ({exc}); waiting until it drops the worker")
                said = True
            time.sleep(2.0)


def _change_in_place(session: Session, desired: Desired, action: str, deadline: float, progress: Progress) -> None:
    """Scale, heal, roll or repair a running model: it keeps answering; then wait for every replica. A
    model still marked ERROR after the change is repaired too."""
    if action == "scale":
        replicas.scale(session, desired.uid, desired.replica, deadline, progress, desired)
    elif action == "heal":
        replicas.heal(session, desired, deadline, progress)
    elif action == "roll":
        replicas.roll(session, desired, deadline, progress)
    instance = session.server.instance(desired.uid)
    if action == "repair" or (instance is not None and instance.failed):
        replicas.repair(session, desired, deadline, progress)
    session.server.wait_until_ready(desired.uid, desired.replica, deadline)


def ensure_weights(target: Target, deadline: float, progress: Progress = _quiet) -> None:
    """Fetch, generate or check the weights; deployments sharing a directory take turns."""
    weights = target.deployment.weights
    with held_lock(_weights_lock(target), deadline, f"the weights in {target.weights}", progress):
        target.source.ensure(target.weights, weights.model_id, weights.revision, weights.hub_endpoint)


def _weights_lock(target: Target) -> Path:
    digest = hashlib.sha256(str(target.weights).encode()).hexdigest()[:16]
    return target.home / "locks" / file_name("weights", digest, suffix=".lock")


def held_deployment_lock(session: Session, model_uid: str, deadline: float, progress: Progress = _quiet):
    """The lock every change of one uid on one server takes (deploy, launch, scale, destroy), so that two
    of them take turns instead of interleaving their requests."""
    path = deployment_lock_path(session.home, session.endpoint, model_uid)
    return held_lock(path, deadline, f"{model_uid} on {session.endpoint}", progress)


def deployment_lock_path(home: Path, endpoint: str, model_uid: str) -> Path:
    server = endpoint.split("://", 1)[-1]
    return home / "locks" / file_name(model_uid, server, suffix=".lock")


def held_registration(session: Session, model_name: str, deadline: float, removing: bool = False,
                      progress: Progress = _quiet):  # fmt: skip
    """The registration `model_name` stays while this is held: deploys, launches and scales of any uid
    share it; destroy and unregister, which remove the registration, hold it alone. So a removal
    never finds "nobody runs it" while another xrerank process is starting a model on it."""
    path = registration_lock_path(session.home, session.endpoint, model_name)
    return held_shared_lock(path, deadline, f"the registration {model_name} on {session.endpoint}", removing, progress)


def registration_lock_path(home: Path, endpoint: str, model_name: str) -> Path:
    server = endpoint.split("://", 1)[-1]
    return home / "locks" / file_name("registration", model_name, server, suffix=".lock")


def _raise_if_refused(steps: list[Step]) -> None:
    if refused(steps):
        raise Conflict("; ".join(step.detail for step in refused(steps)) + "; use --replace to change it")


def _verify_and_stamp(session: Session, target: Target, spec: dict, progress: Progress) -> Report:
    verify = target.deployment.verify
    server = session.server
    before = server.instance(target.settings.uid)
    progress(f"verify: running the {verify.suite} suite")
    report = verify_model(session, target.settings.uid, verify.suite, target.cases_file, target.settings.dtype)
    if not report.passed:
        failed = [f"{c.name} ({c.detail})" for c in report.checks if not c.passed]
        raise VerificationFailed(f"{target.settings.uid} is up but failed verification: {'; '.join(failed)}", report)
    after = server.instance(target.settings.uid)
    if before is None or after is None or before.identity() != after.identity():
        raise XrerankError(
            f"{target.settings.uid} changed while it was being verified (relaunched, or a replica replaced); "
            "run deploy again to verify what runs now"
        )
    ledger.stamp_verified(session.home, server.endpoint, after, _fingerprint(target, spec), verify.suite)
    return report


class PreflightFailed(XrerankError):
    def __init__(self, failed: list[Finding]) -> None:
        first = failed[0]
        more = f" (and {len(failed) - 1} more; see `xrerank doctor`)" if len(failed) > 1 else ""
        super().__init__(
            f"preflight: {first.check}: {first.evidence}; fix: {first.fix}{more}; --skip-preflight to go on anyway"
        )
        self.failed = failed
        # Unreachable, refused or query-only credentials are exit 3, as the same failure is elsewhere.
        if any(f.area == "server" and f.check in ("reachable", "auth", "credentials", "ban") for f in failed):
            self.exit_code = ExitCode.UNREACHABLE


def _raise_on_failures(findings: list[Finding]) -> None:
    failed = [f for f in findings if f.level == FAIL]
    if failed:
        raise PreflightFailed(failed)


class VerificationFailed(XrerankError):
    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Destroyed:
    model_uid: str
    terminate: str
    unregister: str
    weights: str
    kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def destroy(session: Session, target: Target, deadline: float, purge_weights: bool = False) -> Destroyed:
    """Terminate and unregister what the deployment made; the weights stay unless `purge_weights`,
    and then only the files xrerank wrote go (never a `local` source's)."""
    server, uid, name = session.server, target.settings.uid, target.settings.model_name
    if purge_weights and not target.source.owns_weights:
        raise BadInput(f"weights of source {target.source.name} are yours, not xrerank's: they are never purged")
    with held_deployment_lock(session, uid, deadline), held_registration(session, name, deadline, removing=True):
        # Everything shared is checked before anything changes: a refusal leaves the server as it was.
        others = models_running(server, name, besides=uid)
        if others and server.registration(name) is not None:
            raise Conflict(
                f"nothing was changed: {name} is registered for {_named(others)} too, and destroying this "
                f"deployment would unregister it under them; to stop only {uid}: xrerank terminate --model-uid {uid}"
            )
        if purge_weights:
            sharing = weights_users(server, target.weights, name, uid)
            if sharing:
                raise Conflict(f"nothing was changed: the weights in {target.weights} are in use by {sharing}")
        terminated = _terminate(session, uid)
        try:
            unregistered = unregister_model(server, name)
        except Conflict as exc:  # a model of another uid started on it meanwhile (not through xrerank)
            raise Conflict(f"{uid}: {terminated}, but the registration is kept: {exc}") from None
        result = Destroyed(uid, terminated, unregistered, "kept")
        target.spec_path.unlink(missing_ok=True)
    if purge_weights and target.weights.exists():
        try:
            with held_lock(_weights_lock(target), deadline, f"the weights in {target.weights}"):
                purged = purge(target.weights)
        except NotOurs as exc:
            raise XrerankError(f"{uid} is terminated and unregistered, but {exc}") from None
        result.weights = "deleted" if purged.removed_directory else f"deleted {len(purged.deleted)} file(s)"
        result.kept = purged.kept
    return result


def weights_users(server: Xinference, weights: Path, model_name: str, model_uid: str) -> str:
    """Who else needs the weights in `weights`: other registrations of that directory, and the models
    running them (or running `model_name` under another uid); "" when nobody does."""
    directory = weights.resolve()
    names = [
        other
        for other in server.registration_names()
        if other != model_name
        and (found := server.registration(other)) is not None
        and found.model_uri is not None
        and Path(found.model_uri).resolve() == directory
    ]
    running = sorted({uid for n in [model_name, *names] for uid in models_running(server, n, besides=model_uid)})
    parts = ([f"the registration(s) {', '.join(names)}"] if names else []) + ([_named(running)] if running else [])
    return " and ".join(parts)


def _fingerprint(target: Target, spec: dict | None) -> str:
    settings = target.settings
    launch = {**settings.__dict__, "envs": dict(sorted(settings.envs.items())), "gpu_idx": list(settings.gpu_idx)}
    text = json.dumps(
        {"spec": spec, "launch": launch, "verify": target.deployment.verify.model_dump()}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()
