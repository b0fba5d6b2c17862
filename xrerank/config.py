"""The deployment file: what should be running, in one strict, versioned YAML document.

Unknown keys and wrong types are errors that name the file, the line and the key. Secrets are
never inline: the file names the environment variables that hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BadInput

SUPPORTED_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CredentialsFromEnv(_Strict):
    api_key_env: str = "XRERANK_API_KEY"
    username_env: str = "XRERANK_USERNAME"
    password_env: str = "XRERANK_PASSWORD"


class Weights(_Strict):
    source: Literal["modelscope", "local", "demo"]
    model_id: str | None = None
    revision: str = "master"
    dir: str | None = Field(default=None, description="where the weights live; default $XRERANK_HOME/models/NAME")
    hub_endpoint: str | None = None

    @model_validator(mode="after")
    def _source_needs(self) -> Weights:
        if self.source == "modelscope" and not self.model_id:
            raise ValueError("source modelscope needs model_id, e.g. AI-ModelScope/bge-reranker-v2-m3")
        if self.source == "local" and not self.dir:
            raise ValueError("source local needs dir: the directory that holds the weights")
        return self


class Registration(_Strict):
    model_name: str
    language: list[str] = ["en", "zh", "multilingual"]
    max_tokens: int | None = Field(default=None, ge=1)
    persist: bool = True


class Launch(_Strict):
    model_uid: str | None = None
    replica: int = Field(default=1, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    gpu_idx: list[int] = []
    n_gpu: int | None = Field(default=None, ge=1)
    worker_ip: str | None = None
    use_fp16: bool = False
    threads_per_replica: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, description="pairs per micro-batch (Xinference: 32)")
    batch_interval: float | None = Field(default=None, ge=0, description="seconds to gather one (Xinference: 0.003)")
    env: dict[str, str] = {}


class Verify(_Strict):
    suite: Literal["mechanics", "quality", "all", "none"] = "mechanics"
    cases: str | None = None


class Deployment(_Strict):
    version: int
    endpoint: str | None = None
    credentials: CredentialsFromEnv = CredentialsFromEnv()
    weights: Weights
    registration: Registration
    launch: Launch = Launch()
    verify: Verify = Verify()

    @model_validator(mode="after")
    def _supported(self) -> Deployment:
        if self.version != SUPPORTED_VERSION:
            raise ValueError(f"version {self.version} is not supported; this xrerank reads version {SUPPORTED_VERSION}")
        return self


def load_deployment(path: str | Path) -> tuple[Deployment, Path]:
    """Parse and validate `path`; return the deployment and the directory relative paths start from."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read deployment file {path}: {exc}") from None
    try:
        node = yaml.compose(text)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}{where}: not valid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise BadInput(f"{path}: a deployment file is a YAML mapping with a version: key")
    try:
        deployment = Deployment.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = tuple(str(part) for part in error["loc"])
        line = _line_of(node, location)
        key = ".".join(location) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise BadInput(f"{path}:{line}: {key}: {_message(error)}{more}") from None
    return deployment, path.resolve().parent


def weights_dir(deployment: Deployment, base: Path, home: Path) -> Path:
    """Where the weights live: the file's `dir` (relative to the file), else under XRERANK_HOME."""
    if deployment.weights.dir:
        expanded = Path(os.path.expandvars(os.path.expanduser(deployment.weights.dir)))
        return expanded if expanded.is_absolute() else (base / expanded).resolve()
    return home / "models" / deployment.registration.model_name


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _line_of(node: object, location: tuple[str, ...]) -> int:
    """The line of the deepest YAML node on `location` (pydantic's error path)."""
    import yaml

    line = getattr(node, "start_mark", None).line + 1 if node is not None else 1
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
