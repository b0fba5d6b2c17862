"""Typed records of what an Xinference server holds, and of how to launch a model.

The adapter (server.py) is the only module that reads Xinference's REST shapes; it returns
these records, and everything above it (plan, status, deploy, verify, doctor, tune, the
client) works on them. `Backend` is what those modules ask of a server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

from xrerank.defaults import MAX_REPLICAS
from xrerank.errors import BadInput

READY = "READY"
CREATING = "CREATING"
FAILED_STATES = ("ERROR", "TERMINATED")
UNREACHABLE = "UNREACHABLE"  # ours: listed READY, but its worker or model process refuses connections
LOST_STATES = (*FAILED_STATES, UNREACHABLE)


@dataclass(frozen=True)
class Registration:
    """A custom rerank model registered on the server; `spec` is its JSON as the server keeps it."""

    model_name: str
    spec: dict
    is_builtin: bool = False

    @property
    def max_tokens(self) -> int | None:
        return self.spec.get("max_tokens")

    @property
    def model_spec(self) -> dict:
        return (self.spec.get("model_specs") or [{}])[0]

    @property
    def model_uri(self) -> str | None:
        uri = self.model_spec.get("model_uri")
        return uri.removeprefix("file://") if isinstance(uri, str) else None

    @property
    def model_id(self) -> str | None:
        return self.model_spec.get("model_id")


@dataclass(frozen=True)
class Replica:
    id: int
    uid: str | None
    status: str
    worker: str | None = None
    model_address: str | None = None
    gpu_idx: tuple[int, ...] = ()
    created_ts: int | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == READY

    @property
    def lost(self) -> bool:
        return self.status in LOST_STATES

    def describe(self) -> str:
        return f"#{self.id} {self.status} on {self.worker}"


@dataclass(frozen=True)
class Instance:
    """A launched model (kept by the server even when its launch failed)."""

    uid: str
    model_name: str
    status: str
    replica: int  # how many replicas the instance is meant to have
    created_ts: int | None
    replicas: tuple[Replica, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == "ERROR"

    @property
    def ready_count(self) -> int:
        return sum(replica.ready for replica in self.replicas)

    def identity(self) -> tuple:
        """Changes when the instance is relaunched, or when a replica is replaced."""
        return (self.uid, self.created_ts, tuple(sorted((r.id, r.uid, r.created_ts) for r in self.replicas)))


@dataclass(frozen=True)
class Model:
    """An entry of /v1/models: a running model of any type."""

    uid: str
    model_name: str
    model_type: str
    replica: int


@dataclass(frozen=True)
class Worker:
    address: str
    cpu_count: int | None = None
    mem_available: int | None = None
    mem_total: int | None = None
    gpu_count: int = 0
    gpu_vram_available: int | None = None
    gpu_vram_total: int | None = None
    gpu_free: tuple[tuple[int, int], ...] = ()  # (GPU index, free bytes), where the server reports each

    def free_on_gpu(self, index: int) -> int:
        """Free memory on one GPU: as reported, else the worker's free VRAM shared evenly."""
        reported = dict(self.gpu_free)
        if index in reported:
            return reported[index]
        return (self.gpu_vram_available or 0) // max(1, self.gpu_count)


@dataclass(frozen=True)
class LaunchSettings:
    """How to launch a registered rerank model. `device` is "cpu", "cuda" or None (the server picks)."""

    model_name: str
    model_uid: str | None = None
    replica: int = 1
    gpu_idx: tuple[int, ...] = ()
    n_gpu: int | None = None
    device: str | None = None
    worker_ip: str | None = None
    use_fp16: bool = False
    threads_per_replica: int | None = None
    batch_size: int | None = None
    batch_interval: float | None = None
    envs: dict[str, str] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.model_uid or self.model_name

    @property
    def wants_gpu(self) -> bool:
        return bool(self.gpu_idx) or bool(self.n_gpu) or self.device == "cuda"

    @property
    def dtype(self) -> str:
        return "float16" if self.use_fp16 else "float32"

    def tuning(self) -> dict:
        """What the launch sets that the server does not report back: compared through xrerank's record."""
        return {
            "threads_per_replica": self.threads_per_replica,
            "batch_size": self.batch_size,
            "batch_interval": self.batch_interval,
            "use_fp16": self.use_fp16,
            "env": dict(sorted(self.envs.items())),
        }

    def target_workers(self, workers: list[Worker]) -> list[Worker]:
        """The workers the replicas may land on: the one `worker_ip` names, or all of them."""
        if not self.worker_ip:
            return workers
        return [worker for worker in workers if on_worker(worker.address, self.worker_ip)]

    def replicas_per_worker(self, workers: int) -> int:
        """Pinned replicas share one worker; otherwise Xinference spreads them over `workers`."""
        return self.replica if self.worker_ip else math.ceil(self.replica / max(1, workers))

    def replicas_per_gpu(self) -> dict[int, int]:
        """How many replicas each GPU index holds (`gpu_idx` [0, 0, 1, 1] -> {0: 2, 1: 2})."""
        if not self.gpu_idx:
            return {}
        per_replica = len(self.gpu_idx) // self.replica
        counts: dict[int, int] = {}
        for start in range(0, len(self.gpu_idx), per_replica):
            for index in set(self.gpu_idx[start : start + per_replica]):
                counts[index] = counts.get(index, 0) + 1
        return counts

    def with_(self, **changes: object) -> LaunchSettings:
        return replace(self, **changes)


def check_launch_settings(settings: LaunchSettings) -> None:
    """What can be refused before the server spends ~20 s loading; the deployment file's schema
    applies the same rules, so a file that loads is one that launches."""
    if not 1 <= settings.replica <= MAX_REPLICAS:
        raise BadInput(f"replica must be between 1 and {MAX_REPLICAS}, got {settings.replica}")
    if any(index < 0 for index in settings.gpu_idx):
        raise BadInput(f"GPU indexes cannot be negative, got {list(settings.gpu_idx)}")
    if settings.gpu_idx and len(settings.gpu_idx) % settings.replica:
        raise BadInput(
            f"{len(settings.gpu_idx)} GPU indexes cannot be shared evenly by {settings.replica} replicas; "
            "give a multiple of the replica count (an index may repeat: 0,0 puts two replicas on GPU 0)"
        )
    if settings.gpu_idx and settings.n_gpu:
        raise BadInput("give either GPU indexes or a GPU count, not both")
    if settings.device == "cpu" and (settings.gpu_idx or settings.n_gpu):
        raise BadInput("device cpu contradicts the GPU indexes or GPU count given")
    if settings.use_fp16 and settings.device == "cpu":
        raise BadInput("fp16 on CPU runs about 6x slower than fp32: drop fp16, or launch on a GPU")
    if settings.threads_per_replica is not None and settings.threads_per_replica < 1:
        raise BadInput(f"threads per replica must be at least 1, got {settings.threads_per_replica}")
    if settings.batch_size is not None and settings.batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {settings.batch_size}")
    if settings.batch_interval is not None and not 0 <= settings.batch_interval <= 10:
        raise BadInput(f"batch interval must be between 0 and 10 seconds, got {settings.batch_interval}")


def repeated_per_gpu(gpus: tuple[int, ...], per_gpu: int) -> tuple[int, ...]:
    """The gpu_idx for `per_gpu` replicas on each GPU: (0, 1) x 2 is (0, 0, 1, 1), since Xinference
    places replica i on the i-th share. The inverse of LaunchSettings.replicas_per_gpu."""
    return tuple(index for index in gpus for _ in range(per_gpu))


def on_worker(address: str | None, worker_ip: str) -> bool:
    """Xinference's --worker-ip takes a worker's full address or just its host."""
    return address is not None and (address == worker_ip or address.split(":")[0] == worker_ip)


class Backend(Protocol):
    """What the read-only parts above the adapter (status, the rerank target) ask of a server."""

    @property
    def endpoint(self) -> str: ...

    def auth_enabled(self) -> bool: ...

    def version(self) -> str: ...

    def workers(self) -> list[Worker]: ...

    def registration_names(self, builtin: bool = False) -> list[str]: ...

    def registration(self, model_name: str) -> Registration | None: ...

    def instance(self, model_uid: str) -> Instance | None: ...

    def instances(self) -> list[Instance]: ...

    def replicas(self, model_uid: str, check_reachable: bool = False) -> list[Replica]: ...

    def models(self) -> list[Model]: ...
