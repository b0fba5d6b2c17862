"""The Xinference adapter: what xrerank asks of an Xinference 4.1 server, in its own REST terms.

REST rather than `xinference launch`: the CLI has no `--device`, prints to stderr, waits
without a deadline, and calls a model ready as soon as its FIRST replica is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from .errors import BadInput, ServerError, TimedOut
from .http import Api, Credentials

READY = "READY"
FAILED_STATES = ("ERROR", "TERMINATED")
UNREACHABLE = "UNREACHABLE"  # ours: listed READY, but its worker or model process refuses connections
LOST_STATES = ("ERROR", "TERMINATED", UNREACHABLE)


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

    def tuning(self) -> dict:
        """What the launch sets that the server does not report back: compared through xrerank's record."""
        return {
            "threads_per_replica": self.threads_per_replica,
            "batch_size": self.batch_size,
            "batch_interval": self.batch_interval,
            "use_fp16": self.use_fp16,
            "env": dict(sorted(self.envs.items())),
        }

    def target_workers(self, workers: list[dict]) -> list[dict]:
        """The workers the replicas may land on: the one `worker_ip` names, or all of them."""
        if not self.worker_ip:
            return workers
        return [worker for worker in workers if on_worker(worker["ip_address"], self.worker_ip)]

    def replicas_per_worker(self, workers: int) -> int:
        """Pinned replicas share one worker; otherwise Xinference spreads them over `workers`."""
        return self.replica if self.worker_ip else math.ceil(self.replica / max(1, workers))


def on_worker(address: str, worker_ip: str) -> bool:
    """Xinference's --worker-ip takes a worker's full address or just its host."""
    return address == worker_ip or address.split(":")[0] == worker_ip


def check_launch_settings(settings: LaunchSettings) -> None:
    """What can be refused before the server spends ~20 s loading."""
    if settings.replica < 1:
        raise BadInput(f"replica must be at least 1, got {settings.replica}")
    if settings.gpu_idx and len(settings.gpu_idx) % settings.replica:
        raise BadInput(
            f"{len(settings.gpu_idx)} GPU indexes cannot be shared evenly by {settings.replica} replicas; "
            "give a multiple of the replica count"
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


def replica_reachable(replica: dict, timeout: float = 0.5) -> bool:
    """Does the replica's worker (and model process) accept a TCP connection?

    When a worker dies, Xinference's supervisor keeps its replicas READY for ~20 s and routes
    every other request to them; a refused connection shows the loss at once.
    """
    import socket

    for address in (replica.get("worker_address"), replica.get("model_address")):
        if not address:
            continue
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except (OSError, ValueError):
            return False
    return True


def threads_per_replica(worker_cores: int, replicas_on_worker: int) -> int:
    """Each CPU replica's share of the worker's cores, so replicas do not oversubscribe them."""
    return max(1, worker_cores // max(1, replicas_on_worker))


def launch_payload(settings: LaunchSettings, threads: int | None) -> dict:
    """The body of POST /v1/models for `settings`; unknown keys reach the CrossEncoder constructor."""
    payload: dict = {
        "model_uid": settings.uid,
        "model_name": settings.model_name,
        "model_type": "rerank",
        "replica": settings.replica,
    }
    if settings.gpu_idx:
        payload["gpu_idx"] = list(settings.gpu_idx)
    if settings.n_gpu:
        payload["n_gpu"] = settings.n_gpu
    elif settings.device == "cpu":
        payload["n_gpu"] = None
    if settings.device:
        payload["device"] = settings.device
    if settings.worker_ip:
        payload["worker_ip"] = settings.worker_ip
    if settings.use_fp16:
        payload["use_fp16"] = True
    # Read by the model's micro-batcher (xinference/model/batch.py), per launch.
    if settings.batch_size is not None:
        payload["batch_size"] = settings.batch_size
    if settings.batch_interval is not None:
        payload["batch_interval"] = settings.batch_interval
    envs = dict(settings.envs)
    if threads is not None:
        envs.setdefault("OMP_NUM_THREADS", str(threads))
        envs.setdefault("MKL_NUM_THREADS", str(threads))
    if envs:
        payload["envs"] = envs
    return payload


class Xinference:
    """A connection to one Xinference server (a local one or a cluster's supervisor)."""

    def __init__(self, endpoint: str, credentials: Credentials | None = None, timeout: float = 30.0) -> None:
        self.api = Api(endpoint, credentials or Credentials(), timeout)

    @property
    def endpoint(self) -> str:
        return self.api.endpoint

    def version(self) -> str:
        return self.api.get("/v1/cluster/version")["version"]

    def auth_enabled(self) -> bool:
        return bool(self.api.get("/v1/cluster/auth").get("auth"))

    def nodes(self) -> list[dict]:
        return self.api.get("/v1/cluster/info", params={"detailed": "true"})

    def workers(self) -> list[dict]:
        return [node for node in self.nodes() if node.get("node_type") == "Worker"]

    def registrations(self) -> list[dict]:
        """Every rerank name the server knows, built-in or custom: [{"model_name", "is_builtin"}]."""
        return self.api.get("/v1/model_registrations/rerank")

    def registration(self, model_name: str) -> dict | None:
        """The registered spec of a custom rerank model, or None when no such name is registered."""
        if model_name not in {entry["model_name"] for entry in self.registrations()}:
            return None
        return self.api.get(f"/v1/model_registrations/rerank/{quote(model_name, safe='')}")

    def register(self, spec: dict, persist: bool = True, worker_ip: str | None = None) -> None:
        # The API wants the model as a JSON *string*; an object gives "model str type expected".
        body = {"model": json.dumps(spec), "persist": persist, "worker_ip": worker_ip}
        self.api.post("/v1/model_registrations/rerank", json=body)

    def unregister(self, model_name: str) -> None:
        self.api.delete(f"/v1/model_registrations/rerank/{quote(model_name, safe='')}")

    def models(self) -> list[dict]:
        return self.api.get("/v1/models")["data"]

    def instances(self) -> list[dict]:
        return self.api.get("/v1/models/instances")

    def instance(self, model_uid: str) -> dict | None:
        """The instance record of `model_uid` (also kept for failed launches), or None."""
        found = self.api.get("/v1/models/instances", params={"model_uid": model_uid})
        return found[0] if found else None

    def replicas(self, model_uid: str) -> list[dict]:
        return self.api.get(f"/v1/models/{quote(model_uid, safe='')}/replicas")

    def checked_replicas(self, model_uid: str) -> list[dict]:
        """The replicas, with those listed READY but not reachable marked UNREACHABLE."""
        replicas = self.replicas(model_uid)
        for replica in replicas:
            if replica.get("status") == READY and not replica_reachable(replica):
                replica["status"] = UNREACHABLE
        return replicas

    def launch(self, settings: LaunchSettings, threads: int | None) -> None:
        """Ask for the launch and return at once; `wait_until_ready` does the waiting, with a deadline."""
        self.api.post("/v1/models", params={"wait_ready": "false"}, json=launch_payload(settings, threads))

    def terminate(self, model_uid: str) -> None:
        self.api.delete(f"/v1/models/{quote(model_uid, safe='')}")

    def wait_until_ready(
        self,
        model_uid: str,
        replica: int,
        deadline: float,
        on_progress: Callable[[list[str]], None] = lambda states: None,
    ) -> list[dict]:
        """Poll the replicas until all `replica` of them are READY; raise on ERROR or at the deadline."""
        states: list[str] = []
        while True:
            try:
                replicas = self.replicas(model_uid)
            except ServerError as exc:
                if exc.status not in (400, 404, 503):
                    raise
                replicas = []
            states = [entry.get("status", "?") for entry in replicas]
            on_progress(states)
            failed = [entry for entry in replicas if entry.get("status") in FAILED_STATES]
            if failed:
                reason = failed[0].get("error_message") or failed[0].get("status")
                raise ServerError(f"replica {failed[0].get('replica_id')} of {model_uid} failed: {reason}")
            if len(replicas) >= replica and all(state == READY for state in states):
                return replicas
            if not replicas:
                self._raise_if_launch_failed(model_uid)
            if time.monotonic() >= deadline:
                raise TimedOut(
                    f"{model_uid} not ready before the deadline (replicas: {', '.join(states) or 'none yet'}); "
                    "it may still be loading: run `xrerank status` or raise --timeout"
                )
            time.sleep(1.0)

    def _raise_if_launch_failed(self, model_uid: str) -> None:
        record = self.instance(model_uid)
        if record and record.get("status") == "ERROR":
            errors = [r.get("error_message") for r in record.get("replica_statuses", []) if r.get("error_message")]
            raise ServerError(f"launch of {model_uid} failed: {errors[0] if errors else 'status ERROR'}")
