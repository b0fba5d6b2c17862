"""Find the launch settings that serve a deployment fastest on its own server, within a time budget.

Each trial launches the registered model under a scratch uid (`<uid>-tune`) with one setting, loads
it with `bench` (warmed up first, at the concurrency asked for, through the API key), and
terminates it. On CPU the settings are replicas x threads per replica x Xinference's
micro-batching; on GPUs they are replicas per GPU (1, 2, 4, ... while the GPU's memory holds
them), micro-batching, and the client's documents per request. The best trial (most pairs/s
without errors, then the lowest p95) is written into the deployment file, comments and layout
kept; `deploy FILE --replace` applies it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from xrerank.deploy.engine import cpu_threads, launch_model, terminate_model
from xrerank.errors import BadInput, XrerankError
from xrerank.perf.bench import BenchResult, InProcess, Workload, in_process_limit, run_bench, sender
from xrerank.xinference.records import LaunchSettings, Worker, repeated_per_gpu
from xrerank.xinference.session import Session

Progress = Callable[[str], None]
SETTLE_SECONDS = 3.0  # terminating a trial and letting its processes exit before the next one


@dataclass(frozen=True)
class Setting:
    replica: int
    threads_per_replica: int | None
    batch_size: int | None = None
    batch_interval: float | None = None
    gpus: tuple[int, ...] = ()  # the GPUs used (each once); replicas_per_gpu of them on each
    replicas_per_gpu: int | None = None
    chunk_size: int | None = None  # the client's documents per request (not a launch setting)

    def label(self) -> str:
        replicas, threads, size, interval, per_gpu, chunk = self.columns()
        where = f"{per_gpu} per GPU on GPUs {list(self.gpus)}" if self.gpus else f"x {threads} thread(s)"
        return f"{replicas} replica(s) {where}, batch size {size}, interval {interval}" + (
            f", {chunk} documents per request" if self.chunk_size else ""
        )

    def columns(self) -> tuple[str, ...]:
        """Replicas, threads, batch size, interval, replicas per GPU, chunk; "-" where the default applies."""
        threads = "-" if self.threads_per_replica is None else str(self.threads_per_replica)
        interval = "-" if self.batch_interval is None else f"{self.batch_interval:g}"
        per_gpu = str(self.replicas_per_gpu) if self.replicas_per_gpu else "-"
        return str(self.replica), threads, str(self.batch_size or "-"), interval, per_gpu, str(self.chunk_size or "-")

    def launch(self, settings: LaunchSettings, uid: str) -> LaunchSettings:
        gpu_idx = repeated_per_gpu(self.gpus, self.replicas_per_gpu or 1)
        return replace(
            settings,
            model_uid=uid,
            replica=self.replica,
            threads_per_replica=self.threads_per_replica,
            batch_size=self.batch_size,
            batch_interval=self.batch_interval,
            gpu_idx=gpu_idx or settings.gpu_idx,
            n_gpu=None if gpu_idx else settings.n_gpu,
        )


@dataclass
class Trial:
    setting: Setting
    result: BenchResult | None = None
    failure: str | None = None
    seconds: float = 0.0
    vs_in_process: float | None = None  # served pairs/s over the in-process limit, same dtype, same GPU

    @property
    def usable(self) -> bool:
        return self.result is not None and not self.result.errors and self.result.answered > 0

    def as_dict(self) -> dict:
        return {
            **self.setting.__dict__,
            "gpus": list(self.setting.gpus),
            "seconds": round(self.seconds, 1),
            "failure": self.failure,
            "vs_in_process": None if self.vs_in_process is None else round(self.vs_in_process, 3),
            "bench": self.result.as_dict() if self.result else None,
        }


OBJECTIVES = ("throughput", "latency")


def best_of(trials: list[Trial], objective: str) -> Trial | None:
    """Throughput: the most pairs/s, then the lowest p95. Latency: the lowest p50, then p95, at the
    workload's callers. Only trials without errors count."""
    usable = [trial for trial in trials if trial.usable and trial.result is not None]
    if objective == "latency":
        return min(usable, key=lambda t: (t.result.percentile(0.5), t.result.percentile(0.95)), default=None)
    return max(usable, key=lambda t: (t.result.pairs_per_second, -t.result.percentile(0.95)), default=None)


@dataclass
class Tuning:
    trials: list[Trial]
    best: Trial | None
    skipped: list[Setting]
    workload: Workload
    in_process: InProcess | None = None
    written: bool = False
    objective: str = "throughput"

    def as_dict(self) -> dict:
        return {
            "objective": self.objective,
            "workload": self.workload.__dict__,
            "trials": [trial.as_dict() for trial in self.trials],
            "best": self.best.as_dict() if self.best else None,
            "not_tried": [{**setting.__dict__, "gpus": list(setting.gpus)} for setting in self.skipped],
            "in_process": self.in_process.as_dict() if self.in_process else None,
            "written": self.written,
        }


def candidates(own: Setting, cores: int | None, gpus: tuple[int, ...] = (), max_per_gpu: int = 1,
               docs: int = 16, objective: str = "throughput") -> list[Setting]:  # fmt: skip
    """The settings worth trying, most promising first; the deployment's own comes first of all.

    `cores` is what one CPU worker has (None on GPUs); `gpus` the GPU indexes to fill, and
    `max_per_gpu` how many replicas one of them holds by the memory estimate. For latency, the
    client also spreads one request's documents over the replicas (a chunk per replica), which
    keeps every core busy while few callers are waiting."""
    if cores is None:
        per_gpu = [n for n in (1, 2, 4, 8) if n <= max(1, max_per_gpu)]
        options = [Setting(len(gpus) * n, None, gpus=gpus, replicas_per_gpu=n) for n in per_gpu] if gpus else []
        base = options[-1] if options else own
        options += [
            replace(base, batch_size=64, batch_interval=0.01),
            replace(base, batch_size=128, batch_interval=0.01),
        ]
        if docs > 32:  # several smaller requests keep more replicas and batches busy
            options += [replace(base, chunk_size=max(8, docs // 4)), replace(base, chunk_size=max(16, docs // 2))]
    else:
        options = [Setting(1, cores)]
        options += [Setting(replicas, cores // replicas) for replicas in (cores, 2, 4) if 1 < replicas <= cores]
        options += [Setting(1, cores, batch_interval=0.0), Setting(1, cores, batch_size=64, batch_interval=0.01)]
        options += [Setting(replicas, cores // replicas, batch_interval=0.0) for replicas in (cores,) if replicas > 1]
        if objective == "latency" and docs > 1:
            spread = [Setting(r, cores // r, chunk_size=-(-docs // r)) for r in (cores, 2) if 1 < r <= min(cores, docs)]
            options = options[:1] + spread + options[1:]
    unique = [own]
    for option in options:
        if option not in unique:
            unique.append(option)
    return unique


def tune(
    session: Session,
    settings: LaunchSettings,
    workload: Workload,
    budget: float,
    progress: Progress,
    launch_timeout: float = 600.0,
    to_try: list[Setting] | None = None,
    objective: str = "throughput",
) -> Tuning:
    """Run trials (`to_try`, else `candidates`) until the budget would be overrun; the best by `objective`.

    The server is left as it was found: each trial's scratch instance is terminated."""
    server = session.server
    registration = server.registration(settings.model_name)
    if registration is None:
        raise XrerankError(f"{settings.model_name} is not registered on {server.endpoint}; run `xrerank deploy` first")
    scratch_uid = f"{settings.uid}-tune"
    started = time.monotonic()
    terminate_model(server, scratch_uid)  # left over by a tune that was killed
    workers = settings.target_workers(server.workers())
    cores = cpu_threads(server, replace(settings, replica=1, threads_per_replica=None))
    gpus, per_gpu, own = _own_setting(server, settings, workers, registration.model_uri)
    if settings.uid in {model.uid for model in server.models()}:
        progress(f"note: {settings.uid} is running on this server too; trials share the machine with it")
    if objective not in OBJECTIVES:
        raise BadInput(f"objective {objective!r}: choose {' or '.join(OBJECTIVES)}")
    plan = to_try or candidates(own, cores, gpus, per_gpu, workload.docs, objective)
    model_dir = Path(registration.model_uri) if registration.model_uri else None
    limit = None
    if gpus and model_dir is not None and (model_dir / "config.json").is_file():
        limit = _gpu_limit(model_dir, registration.max_tokens, settings.dtype, workload, progress)
    trials: list[Trial] = []
    slowest = 0.0
    for setting in plan:
        elapsed = time.monotonic() - started
        if trials and elapsed + slowest > budget:
            break
        progress(f"trial {len(trials) + 1}/{len(plan)}: {setting.label()}")
        trial = Trial(setting)
        trials.append(trial)
        begin = time.monotonic()
        try:
            trial.result = _run_trial(session, settings, scratch_uid, setting, workload, launch_timeout, progress)
            result = trial.result.as_dict()
            if limit is not None:
                trial.vs_in_process = limit.ratio(trial.result.pairs_per_second)
            progress(f"  {result['pairs_per_s']:.0f} pairs/s, p95 {result['latency_ms']['p95']} ms")
            if result["errors"]:
                reason = next(iter(result["error_reasons"]))
                trial.failure = f"{result['errors']} of {result['requests']} requests failed, most often: {reason}"
                progress(f"  failed: {trial.failure}")
        except XrerankError as exc:
            trial.failure = str(exc).splitlines()[0]
            progress(f"  failed: {trial.failure}")
        finally:
            with contextlib.suppress(XrerankError):
                terminate_model(server, scratch_uid)
            time.sleep(SETTLE_SECONDS)
            trial.seconds = time.monotonic() - begin
            slowest = max(slowest, trial.seconds)
    return Tuning(trials, best_of(trials, objective), plan[len(trials) :], workload, limit, objective=objective)


def _own_setting(
    server, settings: LaunchSettings, workers: list[Worker], model_uri: str | None
) -> tuple[tuple[int, ...], int, Setting]:
    """On GPUs: the GPUs to fill, how many replicas one holds, and the deployment's own setting."""
    gpu_count = max((w.gpu_count for w in workers), default=0)
    on_gpu = settings.wants_gpu or (settings.device != "cpu" and gpu_count > 0)
    if not on_gpu:
        threads = cpu_threads(server, settings)
        return (), 1, Setting(settings.replica, threads, settings.batch_size, settings.batch_interval)
    gpus = tuple(sorted(set(settings.gpu_idx))) or tuple(range(gpu_count))
    per_gpu = settings.replicas_per_gpu()
    own = Setting(
        settings.replica, None, settings.batch_size, settings.batch_interval, gpus, max(per_gpu.values(), default=1)
    )
    return gpus, _replicas_one_gpu_holds(settings, workers, model_uri), own


def _replicas_one_gpu_holds(settings: LaunchSettings, workers: list[Worker], model_uri: str | None) -> int:
    """By doctor's memory estimate; 2 when the weights are not readable here to size them."""
    from xrerank.checks.doctor import HEADROOM, count_parameters, estimate_memory, parameters_from_config
    from xrerank.weights import read_config_file

    directory = Path(model_uri) if model_uri else None
    config = read_config_file(directory) if directory else None
    gpus = sorted(set(settings.gpu_idx)) or range(max((w.gpu_count for w in workers), default=0))
    # Every GPU filled holds the same count, so the tightest one decides it.
    free = min((w.free_on_gpu(i) for w in workers for i in gpus if i < max(1, w.gpu_count)), default=0)
    if config is None or not free:
        return 2
    parameters = (count_parameters(directory) if directory else None) or parameters_from_config(config)
    tokens = config.get("max_position_embeddings", 514) - 2
    need = estimate_memory(config, parameters, min(tokens, 1024), settings.use_fp16, on_gpu=True).total
    return max(1, int(free * HEADROOM // need))


def _gpu_limit(model_dir: Path, max_tokens: int | None, dtype: str, workload: Workload, progress: Progress):
    progress("measuring the in-process limit on this machine's GPU, for comparison")
    try:
        return in_process_limit(model_dir, max_tokens, dtype, workload)
    except Exception as exc:  # noqa: BLE001 - the comparison is extra; the trials go on without it
        progress(f"  no in-process comparison: {str(exc).splitlines()[0][:200]}")
        return None


def _run_trial(
    session: Session,
    settings: LaunchSettings,
    scratch_uid: str,
    setting: Setting,
    workload: Workload,
    launch_timeout: float,
    progress: Progress,
) -> BenchResult:
    launch_model(session, setting.launch(settings, scratch_uid), time.monotonic() + launch_timeout, progress)
    with sender(session, scratch_uid, workload, chunk_size=setting.chunk_size) as send:
        return run_bench(send, workload)


def write_best(path: Path, setting: Setting) -> None:
    """Put `setting` under `launch:` in the deployment file, keeping its comments; atomic.

    The client's documents per request is not a launch setting: `tune` prints it instead."""
    from ruamel.yaml import YAML

    from xrerank.deploy.config import load_deployment

    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    document = yaml.load(path.read_text(encoding="utf-8"))
    launch = document.get("launch")
    if launch is None:
        document["launch"] = launch = {}
    values = {
        "batch_size": setting.batch_size,
        "batch_interval": setting.batch_interval,
    }
    if setting.gpus:  # replicas follow from the GPUs and how many each holds; the GPUs replace a count
        values.update(gpu_idx=list(setting.gpus), replicas_per_gpu=setting.replicas_per_gpu)
        launch.pop("replica", None)
        launch.pop("n_gpu", None)
    else:
        values.update(replica=setting.replica, threads_per_replica=setting.threads_per_replica)
    for key, value in values.items():
        if value is None:
            launch.pop(key, None)
        else:
            launch[key] = value
    temporary = path.with_name(f".{path.name}.tune.tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        yaml.dump(document, stream)
    try:
        load_deployment(temporary)  # never leave a file that `deploy` would refuse
    except BadInput:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
