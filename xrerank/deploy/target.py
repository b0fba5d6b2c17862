"""A deployment file resolved against this machine: where its weights live, how to launch it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xrerank.deploy.config import Deployment, load_deployment, weights_dir
from xrerank.files import file_name
from xrerank.weights import WeightSource, source_for
from xrerank.xinference.records import LaunchSettings, check_launch_settings


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
    settings = deployment.launch_settings()
    check_launch_settings(settings)
    return Target(deployment, base, home, weights_dir(deployment, base, home), settings)


def load_target(path: Path, home: Path) -> Target:
    deployment, base = load_deployment(path)
    return resolve(deployment, base, home)
