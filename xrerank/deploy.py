"""Making the server hold what was asked: idempotent steps, and the deploy that chains them.

Each step checks what the server already has before it changes anything, so a re-run after a
failure or an interruption picks up where the last one stopped: a download resumes, a launch
that is still loading is waited for, and a deployment is reported verified only after its
verification passed against the instance that is running now.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path

from .client import Reranker
from .config import Deployment, weights_dir
from .demo import is_random_model, make_demo_model
from .doctor import FAIL, Finding, preflight
from .errors import BadInput, Conflict, ServerError, TimedOut, XrerankError
from .hub import download
from .modeldir import inspect_model_dir, read_complete_manifest, write_json_atomically
from .plan import DONE, REFUSED, Desired, Observed, Step, launch_step, plan, refused
from .server import LaunchSettings, Xinference, check_launch_settings, threads_per_replica
from .spec import build_spec, spec_differences, validate_model_name
from .verify import Report, run_suites

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default progress sink: library code never prints."""


# --- single steps, shared by the imperative commands and by deploy ---------------------------


def register_model(server: Xinference, spec: dict, persist: bool = True, replace: bool = False) -> str:
    """Register `spec`: "registered", "unchanged" when the same spec is there, "replaced" with `replace`."""
    registered = server.registration(spec["model_name"])
    if registered is not None:
        differences = spec_differences(registered, spec)
        if not differences:
            return "unchanged"
        if not replace:
            raise Conflict(
                f"{spec['model_name']} is registered with another spec ({'; '.join(differences)}); "
                "use --replace to change it"
            )
        server.unregister(spec["model_name"])
        _register_or_restore(server, spec, registered, persist)
        return "replaced"
    server.register(spec, persist=persist)
    return "registered"


def _register_or_restore(server: Xinference, spec: dict, previous: dict, persist: bool) -> None:
    try:
        server.register(spec, persist=persist)
    except XrerankError:
        server.register({k: v for k, v in previous.items() if k != "is_builtin"}, persist=persist)
        raise


def unregister_model(server: Xinference, model_name: str) -> str:
    if server.registration(model_name) is None:
        return "absent"
    server.unregister(model_name)
    return "unregistered"


def terminate_model(server: Xinference, model_uid: str) -> str:
    if model_uid not in {model["id"] for model in server.models()}:
        return "absent"
    server.terminate(model_uid)
    return "terminated"


def launch_model(
    server: Xinference,
    settings: LaunchSettings,
    deadline: float,
    progress: Progress = _quiet,
    replace: bool = False,
) -> str:
    """Launch and wait until EVERY replica is READY.

    Returns "launched", "resumed" (it was loading), "unchanged", "relaunched" (with `replace`) or
    "restored" (replicas had been lost, e.g. with their worker)."""
    check_launch_settings(settings)
    uid = settings.uid
    instance = server.instance(uid)
    outcome = "launched"
    if instance is not None and instance.get("status") != "ERROR":
        replicas = server.checked_replicas(uid)
        desired = Desired(
            settings.model_name, "", uid, settings.replica, gpu_idx=settings.gpu_idx, worker_ip=settings.worker_ip
        )
        step = launch_step(desired, Observed(True, instance=instance, replicas=replicas), replace)
        if step.state == REFUSED:
            raise Conflict(f"{step.detail}; terminate it first, or use deploy --replace")
        if step.state == DONE:
            if all(r.get("status") == "READY" for r in replicas) and len(replicas) >= settings.replica:
                return "unchanged"
            _wait(server, settings, deadline, progress)
            return "resumed"
        progress(f"terminating {uid} to relaunch it: {step.detail}")
        server.terminate(uid)
        outcome = "restored" if step.detail.startswith("restore") else "relaunched"
    threads = cpu_threads(server, settings)
    progress(f"launching {uid}: {settings.replica} replica(s)" + (f", {threads} thread(s) each" if threads else ""))
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
    return outcome


def _lost_the_cache_link_race(error: ServerError) -> bool:
    text = str(error)
    return "File exists" in text and "/cache/" in text


def _wait_until_gone(server: Xinference, uid: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        instance = server.instance(uid)
        if instance is None or instance.get("status") == "ERROR":
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
    except ServerError:
        # A half-started model would answer some requests and fail others: take it down whole.
        _terminate_quietly(server, settings.uid)
        raise


def _terminate_quietly(server: Xinference, uid: str) -> None:
    with contextlib.suppress(XrerankError):
        server.terminate(uid)


def cpu_threads(server: Xinference, settings: LaunchSettings) -> int | None:
    """Threads per replica when the replicas run on CPU; None when they get GPUs."""
    if settings.wants_gpu:
        return None
    workers = settings.target_workers(server.workers())
    if not workers:
        return settings.threads_per_replica
    on_cpu = settings.device == "cpu" or all(w.get("gpu_count", 0) == 0 for w in workers)
    if not on_cpu:
        return None
    if settings.use_fp16:
        raise BadInput("fp16 on CPU runs about 6x slower than fp32 and the target has no GPU: drop fp16")
    if settings.threads_per_replica:
        return settings.threads_per_replica
    cores = min(int(w.get("cpu_count") or 1) for w in workers)
    return threads_per_replica(cores, settings.replicas_per_worker(len(workers)))


# --- verification -----------------------------------------------------------------------------


def verify_model(
    server: Xinference, model_uid: str, suite: str, cases_file: Path | None = None, timeout: float = 30.0
) -> Report:
    """Run the suites against a running model; what they need (weights, limits) is read from the server."""
    instance = server.instance(model_uid)
    if instance is None or instance.get("status") != "READY":
        raise XrerankError(f"{model_uid} is not running; deploy or launch it first")
    registration = server.registration(instance["model_name"]) or {}
    model_spec = (registration.get("model_specs") or [{}])[0]
    uri = model_spec.get("model_uri")
    model_dir = Path(uri.removeprefix("file://")) if uri else None
    readable = model_dir is not None and (model_dir / "config.json").is_file()
    with Reranker(server.endpoint, model_uid, timeout=timeout, credentials=server.api.credentials) as reranker:
        return run_suites(
            reranker,
            suite,
            replicas=int(instance.get("replica") or 1),
            model_dir=model_dir if readable else None,
            max_tokens=registration.get("max_tokens"),
            demo=is_random_model(model_spec.get("model_id")),
            cases_file=cases_file,
        )


# --- the declarative deploy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A deployment file resolved against this machine: where things live, how to launch."""

    deployment: Deployment
    base: Path
    home: Path
    weights: Path
    settings: LaunchSettings

    @property
    def spec_path(self) -> Path:
        return self.home / "specs" / f"{self.deployment.registration.model_name}.json"

    def stamp_path(self, endpoint: str, kind: str = "") -> Path:
        """Where xrerank records what it did on `endpoint`: verified ("") or launched ("launch")."""
        server = endpoint.split("://", 1)[-1].replace("/", "_").replace(":", "_")
        return self.home / "deployments" / f"{self.settings.uid}@{server}{'.' + kind if kind else ''}.json"


def resolve(deployment: Deployment, base: Path, home: Path) -> Target:
    launch = deployment.launch
    settings = LaunchSettings(
        model_name=deployment.registration.model_name,
        model_uid=launch.model_uid,
        replica=launch.replica,
        gpu_idx=tuple(launch.gpu_idx),
        n_gpu=launch.n_gpu,
        device=None if launch.device == "auto" else launch.device,
        worker_ip=launch.worker_ip,
        use_fp16=launch.use_fp16,
        threads_per_replica=launch.threads_per_replica,
        batch_size=launch.batch_size,
        batch_interval=launch.batch_interval,
        envs=dict(launch.env),
    )
    validate_model_name(settings.model_name)
    check_launch_settings(settings)
    return Target(deployment, base, home, weights_dir(deployment, base, home), settings)


def desired_spec(target: Target) -> dict | None:
    """The spec the deployment wants, once the weights are complete on disk; else None."""
    if not _weights_complete(target):
        return None
    weights = target.deployment.weights
    manifest = read_complete_manifest(target.weights) or {}
    registration = target.deployment.registration
    return build_spec(
        inspect_model_dir(target.weights),
        registration.model_name,
        registration.language,
        registration.max_tokens,
        model_id=manifest.get("model_id") or weights.model_id,
    )


def observe(server: Xinference, target: Target) -> tuple[Desired, Observed]:
    spec = desired_spec(target)
    uid = target.settings.uid
    instance = server.instance(uid)
    replicas = server.checked_replicas(uid) if instance is not None and instance.get("status") != "ERROR" else []
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
    launched = _read_json(target.stamp_path(server.endpoint, "launch")) or {}
    observed = Observed(
        weights_complete=spec is not None,
        spec_file=_read_json(target.spec_path),
        registration=server.registration(target.settings.model_name),
        instance=instance,
        replicas=replicas,
        verified=_stamp_matches(target, server.endpoint, spec, instance),
        launched_with=launched.get("tuning") if _same_instance(launched, instance) else None,
    )
    return desired, observed


@dataclass
class DeployResult:
    steps: list[Step]
    carried_out: list[str]
    verification: Report | None
    uid: str
    endpoint: str

    @property
    def changed(self) -> bool:
        return bool(self.carried_out)


def deploy(
    server: Xinference,
    target: Target,
    deadline: float,
    replace: bool = False,
    dry_run: bool = False,
    progress: Progress = _quiet,
    preflight_checks: bool = True,
) -> DeployResult:
    """Compare, plan, and carry out the plan in order; the plan is redone once the weights are known."""
    steps = plan(*observe(server, target), replace=replace)
    result = DeployResult(steps, [], None, target.settings.uid, server.endpoint)
    if dry_run:
        return result
    _raise_if_refused(steps)
    if preflight_checks and any(s.state != DONE for s in steps if s.name in ("register", "launch", "wait")):
        here = _is_loopback(server)
        progress("preflight: checking the server, the deployment" + (" and this machine" if here else ""))
        findings = preflight(server, target, machine=here)
        failed = [f for f in findings if f.level == FAIL]
        if failed:
            raise PreflightFailed(failed)
    if steps[0].state != DONE:
        progress("download: " + steps[0].detail)
        _ensure_weights(target)
        result.carried_out.append("download")
        steps = plan(*observe(server, target), replace=replace)
        _raise_if_refused(steps)
    spec = desired_spec(target)
    assert spec is not None  # the weights are complete here
    by_name = {step.name: step for step in steps}
    if by_name["spec"].state != DONE:
        target.spec_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(target.spec_path, spec)
        result.carried_out.append("spec")
    if by_name["register"].state != DONE:
        progress("register: " + by_name["register"].detail)
        register_model(server, spec, persist=target.deployment.registration.persist, replace=replace)
        result.carried_out.append("register")
    if by_name["launch"].state != DONE or by_name["wait"].state != DONE:
        outcome = launch_model(server, target.settings, deadline, progress, replace=by_name["launch"].replace)
        result.carried_out.append("launch" if outcome != "resumed" else "wait")
        _record_launch(server, target)
    if by_name["verify"].state != DONE:
        result.verification = _verify_and_stamp(server, target, spec, progress)
        result.carried_out.append("verify")
    return result


def _raise_if_refused(steps: list[Step]) -> None:
    if refused(steps):
        raise Conflict("; ".join(step.detail for step in refused(steps)) + "; use --replace to change it")


def _record_launch(server: Xinference, target: Target) -> None:
    """Keep what the server cannot report (threads, batching, env), tied to this very instance."""
    instance = server.instance(target.settings.uid) or {}
    record = {"instance_created_ts": instance.get("instance_created_ts"), "tuning": target.settings.tuning()}
    target.stamp_path(server.endpoint, "launch").parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(target.stamp_path(server.endpoint, "launch"), record)


def _same_instance(record: dict, instance: dict | None) -> bool:
    return instance is not None and record.get("instance_created_ts") == instance.get("instance_created_ts")


def _verify_and_stamp(server: Xinference, target: Target, spec: dict, progress: Progress) -> Report:
    verify = target.deployment.verify
    progress(f"verify: running the {verify.suite} suite")
    cases = (target.base / verify.cases) if verify.cases else None
    report = verify_model(server, target.settings.uid, verify.suite, cases)
    if not report.passed:
        failed = [f"{c.name} ({c.detail})" for c in report.checks if not c.passed]
        raise VerificationFailed(f"{target.settings.uid} is up but failed verification: {'; '.join(failed)}", report)
    instance = server.instance(target.settings.uid) or {}
    stamp = {
        "endpoint": server.endpoint,
        "model_uid": target.settings.uid,
        "fingerprint": _fingerprint(target, spec),
        "instance_created_ts": instance.get("instance_created_ts"),
        "verified_at": time.time(),
        "suite": verify.suite,
    }
    target.stamp_path(server.endpoint).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(target.stamp_path(server.endpoint), stamp)
    return report


class PreflightFailed(XrerankError):
    def __init__(self, failed: list[Finding]) -> None:
        first = failed[0]
        more = f" (and {len(failed) - 1} more; see `xrerank doctor`)" if len(failed) > 1 else ""
        super().__init__(
            f"preflight: {first.check}: {first.evidence}; fix: {first.fix}{more}; --skip-preflight to deploy anyway"
        )
        self.failed = failed


def _is_loopback(server: Xinference) -> bool:
    from urllib.parse import urlparse

    return urlparse(server.endpoint).hostname in ("127.0.0.1", "localhost", "::1")


class VerificationFailed(XrerankError):
    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


def destroy(server: Xinference, target: Target, purge_weights: bool = False) -> dict[str, str]:
    """Terminate and unregister what the deployment made; the weights stay unless `purge_weights`."""
    outcome = {
        "terminate": terminate_model(server, target.settings.uid),
        "unregister": unregister_model(server, target.settings.model_name),
    }
    target.stamp_path(server.endpoint).unlink(missing_ok=True)
    target.stamp_path(server.endpoint, "launch").unlink(missing_ok=True)
    target.spec_path.unlink(missing_ok=True)
    if purge_weights and target.deployment.weights.source != "local" and target.weights.exists():
        shutil.rmtree(target.weights)
        outcome["weights"] = "deleted"
    else:
        outcome["weights"] = "kept"
    return outcome


def _ensure_weights(target: Target) -> None:
    weights = target.deployment.weights
    if weights.source == "demo":
        make_demo_model(target.weights)
    elif weights.source == "modelscope":
        download(weights.model_id or "", target.weights, weights.revision, weights.hub_endpoint)
    else:
        inspect_model_dir(target.weights)


def _weights_complete(target: Target) -> bool:
    if target.deployment.weights.source == "local":
        try:
            inspect_model_dir(target.weights)
        except BadInput:
            return False
        return True
    return read_complete_manifest(target.weights) is not None


def _fingerprint(target: Target, spec: dict | None) -> str:
    launch = dataclass_replace(target.settings, envs=dict(sorted(target.settings.envs.items())))
    text = json.dumps(
        {"spec": spec, "launch": repr(launch), "verify": target.deployment.verify.model_dump()}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _stamp_matches(target: Target, endpoint: str, spec: dict | None, instance: dict | None) -> bool:
    stamp = _read_json(target.stamp_path(endpoint))
    if stamp is None or instance is None or spec is None:
        return False
    return stamp.get("fingerprint") == _fingerprint(target, spec) and _same_instance(stamp, instance)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
