"""The deployment file: what should be running, in one strict, versioned YAML document.

Unknown keys and wrong types are errors that name the file, the line and the key. Secrets are
never inline: the file names the environment variables that hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xrerank.defaults import API_KEY_ENV, MAX_REPLICAS
from xrerank.errors import BadInput
from xrerank.names import validate_model_name, validate_model_uid
from xrerank.xinference.records import LaunchSettings, check_launch_settings, repeated_per_gpu

SUPPORTED_VERSION = 1
MAX_FILE_BYTES = 1 << 20  # a deployment file is a page of YAML; a huge one is a mistake or an attack


def _as_value_error(check, value):
    """pydantic reports ValueError with the file's line; BadInput would bypass it."""
    try:
        return check(value)
    except BadInput as exc:
        raise ValueError(str(exc)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CredentialsFromEnv(_Strict):
    api_key_env: str = API_KEY_ENV
    username_env: str = "XRERANK_USERNAME"
    password_env: str = "XRERANK_PASSWORD"


class Weights(_Strict):
    source: Literal["modelscope", "huggingface", "local", "demo"]
    model_id: str | None = None
    revision: str | None = Field(default=None, description="default: the hub's (master on ModelScope, main on HF)")
    dir: str | None = Field(default=None, description="where the weights live; default $XRERANK_HOME/models/NAME")
    hub_endpoint: str | None = None

    @model_validator(mode="after")
    def _source_needs(self) -> Weights:
        from xrerank.weights import source_for

        problem = source_for(self.source).problem(self.model_id, self.dir)
        if problem:
            raise ValueError(problem)
        return self


class Registration(_Strict):
    model_name: str

    @field_validator("model_name")
    @classmethod
    def _legal_name(cls, name: str) -> str:
        return _as_value_error(validate_model_name, name)

    language: list[str] = ["en", "zh", "multilingual"]
    max_tokens: int | None = Field(default=None, ge=1)
    persist: bool = True
    # The model's repository ships code (config.json's auto_map) that the server must run; the
    # embedded server is then started with XINFERENCE_TRUST_REMOTE_CODE=1.
    trust_remote_code: bool = False


class Launch(_Strict):
    model_uid: str | None = None

    @field_validator("model_uid")
    @classmethod
    def _legal_uid(cls, uid: str | None) -> str | None:
        return None if uid is None else _as_value_error(validate_model_uid, uid)

    replica: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    gpu_idx: list[int] = []
    n_gpu: int | None = Field(default=None, ge=1)
    worker_ip: str | None = None
    use_fp16: bool = False
    threads_per_replica: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, description="pairs per micro-batch (Xinference: 32)")
    batch_interval: float | None = Field(default=None, ge=0, description="seconds to gather one (Xinference: 0.003)")
    replicas_per_gpu: int | None = Field(default=None, ge=1, description="replicas on each GPU of gpu_idx")
    env: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _replicas_from_gpus(cls, data: object) -> object:
        """With replicas_per_gpu, the replica count follows: every listed GPU holds that many."""
        if not isinstance(data, dict) or not isinstance(data.get("replicas_per_gpu"), int):
            return data
        gpus = data.get("gpu_idx")
        if not isinstance(gpus, list) or not gpus:
            raise ValueError("replicas_per_gpu needs gpu_idx: the GPUs to fill, e.g. gpu_idx: [0]")
        if len(set(map(repr, gpus))) != len(gpus):
            raise ValueError("with replicas_per_gpu, list each GPU once in gpu_idx")
        wanted = len(gpus) * data["replicas_per_gpu"]
        if "replica" in data and data["replica"] != wanted:
            raise ValueError(
                f"replica {data['replica']} contradicts {len(gpus)} GPU(s) x {data['replicas_per_gpu']} per GPU "
                f"= {wanted}; drop replica or set it to {wanted}"
            )
        return {**data, "replica": wanted}

    @model_validator(mode="after")
    def _launchable(self) -> Launch:
        """The launch's own rules (records.check_launch_settings): a file that loads is one that launches."""
        _as_value_error(check_launch_settings, self.settings("-"))
        return self

    def settings(self, model_name: str) -> LaunchSettings:
        gpu_idx = tuple(self.gpu_idx)
        if self.replicas_per_gpu:
            gpu_idx = repeated_per_gpu(gpu_idx, self.replicas_per_gpu)
        return LaunchSettings(
            model_name=model_name,
            model_uid=self.model_uid,
            replica=self.replica,
            gpu_idx=gpu_idx,
            n_gpu=self.n_gpu,
            device=None if self.device == "auto" else self.device,
            worker_ip=self.worker_ip,
            use_fp16=self.use_fp16,
            threads_per_replica=self.threads_per_replica,
            batch_size=self.batch_size,
            batch_interval=self.batch_interval,
            envs=dict(self.env),
        )


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

    def launch_settings(self) -> LaunchSettings:
        return self.launch.settings(self.registration.model_name)


def load_deployment(path: str | Path) -> tuple[Deployment, Path]:
    """Parse and validate `path`; return the deployment and the directory relative paths start from."""
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BadInput(f"{path} is {size} bytes; a deployment file is at most {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read deployment file {path}: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_plain(node, path)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply to be a deployment file") from None
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


def _check_plain(node: object, path: Path) -> None:
    """No duplicate keys (YAML keeps the last one silently) and no aliases (one node reached twice)."""
    import yaml

    seen: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current is None:
            continue
        if id(current) in seen:
            line = current.start_mark.line + 1
            raise BadInput(f"{path}:{line}: anchors and aliases are not supported in a deployment file")
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: dict[object, int] = {}
            for key, value in current.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else id(key)
                if name in keys:
                    raise BadInput(
                        f"{path}:{key.start_mark.line + 1}: key {name!r} appears twice "
                        f"(first on line {keys[name]}); a deployment file names each key once"
                    )
                keys[name] = key.start_mark.line + 1
                stack += [key, value]
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value


MODELS_ENV = "XRERANK_MODELS"  # where weights go by default: a directory a CI cache can restore


def weights_dir(deployment: Deployment, base: Path, home: Path) -> Path:
    """Where the weights live: the file's `dir` (relative to the file), else $XRERANK_MODELS/NAME,
    else $XRERANK_HOME/models/NAME."""
    if deployment.weights.dir:
        expanded = Path(os.path.expandvars(os.path.expanduser(deployment.weights.dir)))
        return expanded if expanded.is_absolute() else (base / expanded).resolve()
    models = os.environ.get(MODELS_ENV, "").strip()
    root = Path(models).expanduser().resolve() if models else home / "models"
    if root.exists() and not root.is_dir():
        raise BadInput(f"{MODELS_ENV}={models} is a file; it names the directory the weights go into")
    return root / deployment.registration.model_name


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
