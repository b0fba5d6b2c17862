"""A deployment file resolved against this machine: where its weights live, how to launch it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Deployment, load_deployment, weights_dir
from .files import file_name
from .records import LaunchSettings, repeated_per_gpu
from .server import check_launch_settings
from .weights import WeightSource, source_for


@dataclass(frozen=True)
class Target:
    deployment: Deployment
    base: Path  # the deployment file's directory: relative paths start there
    home: Path  # $XRERANK_HOME
    weights: Path
    settings: LaunchSettings

    @property
    def source(self) -> WeightSource:
        return source_for(self.deployment.weights.source)

    @property
    def spec_path(self) -> Path:
        return self.home / "specs" / file_name(self.deployment.registration.model_name, suffix=".json")

    @property
    def cases_file(self) -> Path | None:
        cases = self.deployment.verify.cases
        return self.base / cases if cases else None

    @property
    def demo(self) -> bool:
        return self.deployment.weights.source == "demo"


def resolve(deployment: Deployment, base: Path, home: Path) -> Target:
    launch = deployment.launch
    gpu_idx = tuple(launch.gpu_idx)
    if launch.replicas_per_gpu:
        gpu_idx = repeated_per_gpu(gpu_idx, launch.replicas_per_gpu)
    settings = LaunchSettings(
        model_name=deployment.registration.model_name,
        model_uid=launch.model_uid,
        replica=launch.replica,
        gpu_idx=gpu_idx,
        n_gpu=launch.n_gpu,
        device=None if launch.device == "auto" else launch.device,
        worker_ip=launch.worker_ip,
        use_fp16=launch.use_fp16,
        threads_per_replica=launch.threads_per_replica,
        batch_size=launch.batch_size,
        batch_interval=launch.batch_interval,
        envs=dict(launch.env),
    )
    check_launch_settings(settings)
    return Target(deployment, base, home, weights_dir(deployment, base, home), settings)


def load_target(path: Path, home: Path) -> Target:
    deployment, base = load_deployment(path)
    return resolve(deployment, base, home)
