"""Find the launch settings that serve a deployment fastest on its own server, within a time budget.

Each trial launches the registered model under a scratch uid (`<uid>-tune`) with one setting of
replicas x threads per replica x micro-batching, loads it with `bench`, and terminates it. The
best trial (most pairs/s without errors, then the lowest p95) is written into the deployment
file, comments and layout kept; `deploy FILE --replace` applies it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .bench import BenchResult, Workload, run_bench
from .deploy import cpu_threads, launch_model, terminate_model
from .errors import BadInput, XrerankError
from .records import LaunchSettings
from .serving import open_client
from .session import Session

Progress = Callable[[str], None]
SETTLE_SECONDS = 3.0  # terminating a trial and letting its processes exit before the next one


@dataclass(frozen=True)
class Setting:
    replica: int
    threads_per_replica: int | None
    batch_size: int | None = None
    batch_interval: float | None = None

    def label(self) -> str:
        replicas, threads, size, interval = self.columns()
        return f"{replicas} replica(s) x {threads} thread(s), batch size {size}, interval {interval}"

    def columns(self) -> tuple[str, str, str, str]:
        """Replicas, threads per replica, batch size, batch interval; "-" where Xinference decides."""
        threads = "-" if self.threads_per_replica is None else str(self.threads_per_replica)
        interval = "-" if self.batch_interval is None else f"{self.batch_interval:g}"
        return str(self.replica), threads, str(self.batch_size or "-"), interval


@dataclass
class Trial:
    setting: Setting
    result: BenchResult | None = None
    failure: str | None = None
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        return self.result is not None and not self.result.errors and self.result.answered > 0

    def as_dict(self) -> dict:
        return {
            **self.setting.__dict__,
            "seconds": round(self.seconds, 1),
            "failure": self.failure,
            "bench": self.result.as_dict() if self.result else None,
        }


@dataclass
class Tuning:
    trials: list[Trial]
    best: Trial | None
    skipped: list[Setting]
    written: bool = False

    def as_dict(self) -> dict:
        return {
            "trials": [trial.as_dict() for trial in self.trials],
            "best": self.best.setting.__dict__ if self.best else None,
            "not_tried": [setting.__dict__ for setting in self.skipped],
            "written": self.written,
        }


def candidates(own: Setting, cores: int | None) -> list[Setting]:
    """The settings worth trying, most promising first; the deployment's own comes first of all.

    `cores` is what one CPU worker has (None on GPUs)."""
    if cores is None:  # on GPUs the replicas follow the GPUs: only the micro-batching is tuned
        options = [replace(own, batch_size=None, batch_interval=None), replace(own, batch_interval=0.0)]
        options.append(replace(own, batch_size=64, batch_interval=0.01))
    else:
        options = [Setting(1, cores)]
        options += [Setting(replicas, cores // replicas) for replicas in (cores, 2, 4) if 1 < replicas <= cores]
        options += [Setting(1, cores, batch_interval=0.0), Setting(1, cores, batch_size=64, batch_interval=0.01)]
        options += [Setting(replicas, cores // replicas, batch_interval=0.0) for replicas in (cores,) if replicas > 1]
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
) -> Tuning:
    """Run trials (`to_try`, else `candidates`) until the budget would be overrun.

    The server is left as it was found: each trial's scratch instance is terminated."""
    server = session.server
    if server.registration(settings.model_name) is None:
        raise XrerankError(f"{settings.model_name} is not registered on {server.endpoint}; run `xrerank deploy` first")
    scratch_uid = f"{settings.uid}-tune"
    started = time.monotonic()
    terminate_model(server, scratch_uid)  # left over by a tune that was killed
    cores = cpu_threads(server, replace(settings, replica=1, threads_per_replica=None))
    own = Setting(settings.replica, cpu_threads(server, settings), settings.batch_size, settings.batch_interval)
    if settings.uid in {model.uid for model in server.models()}:
        progress(f"note: {settings.uid} is running on this server too; trials share the machine with it")
    plan = to_try or candidates(own, cores)
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
            progress(f"  {result['pairs_per_s']:.0f} pairs/s, p95 {result['latency_ms']['p95']} ms")
        except XrerankError as exc:
            trial.failure = str(exc).splitlines()[0]
            progress(f"  failed: {trial.failure}")
        finally:
            with contextlib.suppress(XrerankError):
                terminate_model(server, scratch_uid)
            time.sleep(SETTLE_SECONDS)
            trial.seconds = time.monotonic() - begin
            slowest = max(slowest, trial.seconds)
    usable = [trial for trial in trials if trial.usable]
    best = max(usable, key=lambda t: (t.result.pairs_per_second, -t.result.percentile(0.95)), default=None)
    return Tuning(trials, best, plan[len(trials) :])


def _run_trial(
    session: Session,
    settings: LaunchSettings,
    scratch_uid: str,
    setting: Setting,
    workload: Workload,
    launch_timeout: float,
    progress: Progress,
) -> BenchResult:
    trial_settings = replace(
        settings,
        model_uid=scratch_uid,
        replica=setting.replica,
        threads_per_replica=setting.threads_per_replica,
        batch_size=setting.batch_size,
        batch_interval=setting.batch_interval,
    )
    launch_model(session, trial_settings, time.monotonic() + launch_timeout, progress)
    with open_client(session, scratch_uid, retry_for=0, connections=workload.concurrency) as client:
        warmup = replace(workload, duration=min(2.0, workload.duration), max_requests=workload.concurrency * 2)
        run_bench(client.rerank, warmup)
        return run_bench(client.rerank, workload)


def write_best(path: Path, setting: Setting) -> None:
    """Put `setting` under `launch:` in the deployment file, keeping its comments; atomic."""
    from ruamel.yaml import YAML

    from .config import load_deployment

    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    document = yaml.load(path.read_text(encoding="utf-8"))
    launch = document.get("launch")
    if launch is None:
        document["launch"] = launch = {}
    for key, value in setting.__dict__.items():
        if key == "threads_per_replica" and value is None:
            continue  # a GPU setting: the threads are not tuned
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
