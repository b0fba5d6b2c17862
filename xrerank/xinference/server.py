"""The Xinference adapter: what xrerank asks of an Xinference 4.1 server, in its own REST terms.

This is the one module that knows Xinference's REST shapes: it sends them and turns every answer
into the typed records of records.py. REST rather than `xinference launch`: the CLI has no
`--device`, prints to stderr, waits without a deadline, and calls a model ready as soon as its
FIRST replica is.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from xrerank.client.http import Api, Credentials
from xrerank.errors import ServerError, TimedOut, XrerankError
from xrerank.xinference.records import (
    CREATING,
    FAILED_STATES,
    UNREACHABLE,
    Instance,
    LaunchSettings,
    Model,
    Registration,
    Replica,
    Worker,
)


def replica_reachable(replica: Replica, timeout: float = 0.5) -> bool:
    """Does the replica's worker (and model process) accept a TCP connection?

    When a worker dies, Xinference's supervisor keeps its replicas READY for ~20 s and routes
    every other request to them; a refused connection shows the loss at once.
    """
    import socket

    for address in (replica.worker, replica.model_address):
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


@dataclass(frozen=True)
class ApiKey:
    """An API key as the server lists it: never the secret, only its prefix."""

    id: int
    name: str
    prefix: str
    enabled: bool
    models: tuple[str, ...]  # the model uids it may use; empty: all
    description: str = ""


class Xinference:
    """A connection to one Xinference server (a local one or a cluster's supervisor)."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        source_address: str | None = None,
    ) -> None:
        self.api = Api(endpoint, credentials or Credentials(), timeout, source_address=source_address)

    @classmethod
    def over(cls, api: Api) -> Xinference:
        """The adapter on an existing session (the client's), sharing its credentials and pool."""
        server = cls.__new__(cls)
        server.api = api
        return server

    @property
    def endpoint(self) -> str:
        return self.api.endpoint

    @property
    def credentials(self) -> Credentials:
        return self.api.credentials

    def version(self) -> str:
        return self.api.get("/v1/cluster/version")["version"]

    def auth_enabled(self) -> bool:
        return bool(self.api.get("/v1/cluster/auth").get("auth"))

    def workers(self) -> list[Worker]:
        nodes = self.api.get("/v1/cluster/info", params={"detailed": "true"})
        per_gpu = self._free_per_gpu()
        return [
            _worker(node, per_gpu.get(node["ip_address"], {})) for node in nodes if node.get("node_type") == "Worker"
        ]

    def _free_per_gpu(self) -> dict[str, dict[int, int]]:
        """Each worker's free memory per GPU index, from /status (the cluster info only sums them);
        empty where the server does not say."""
        try:
            status = self.api.get("/status")
        except XrerankError:
            return {}
        found: dict[str, dict[int, int]] = {}
        workers = status.get("workers") if isinstance(status, dict) else None
        for address, entry in (workers or {}).items():
            devices = (entry or {}).get("status") or {}
            for key, device in devices.items():
                index = key.removeprefix("gpu-")
                if key.startswith("gpu-") and index.isdigit() and isinstance(device, dict):
                    found.setdefault(address, {})[int(index)] = int(device.get("mem_free") or 0)
        return found

    def permissions(self) -> set[str]:
        """What the user login may do (Xinference's scopes, "admin" meaning all); refused for an API key."""
        return set(self.api.get("/v1/auth/me").get("permissions") or [])

    # --- registrations ---------------------------------------------------------------------

    def registration_names(self, builtin: bool = False) -> list[str]:
        """The rerank names the server knows: custom ones, and the built-in ones with `builtin`."""
        return [
            r["model_name"] for r in self.api.get("/v1/model_registrations/rerank") if builtin or not r["is_builtin"]
        ]

    def registration(self, model_name: str) -> Registration | None:
        """The registered spec of a custom rerank model, or None when no such name is registered."""
        if model_name not in self.registration_names(builtin=True):
            return None
        spec = self.api.get(f"/v1/model_registrations/rerank/{quote(model_name, safe='')}")
        return Registration(model_name, spec, bool(spec.get("is_builtin")))

    def register(self, spec: dict, persist: bool = True, worker_ip: str | None = None) -> None:
        # The API wants the model as a JSON *string*; an object gives "model str type expected".
        body = {"model": json.dumps(spec), "persist": persist, "worker_ip": worker_ip}
        self.api.post("/v1/model_registrations/rerank", json=body)

    def unregister(self, model_name: str) -> None:
        self.api.delete(f"/v1/model_registrations/rerank/{quote(model_name, safe='')}")

    # --- running models --------------------------------------------------------------------

    def models(self) -> list[Model]:
        return [
            Model(m["id"], m.get("model_name", ""), m.get("model_type", ""), int(m.get("replica") or 1))
            for m in self.api.get("/v1/models")["data"]
        ]

    def instances(self) -> list[Instance]:
        return [_instance(record) for record in self.api.get("/v1/models/instances")]

    def instance(self, model_uid: str) -> Instance | None:
        """The instance record of `model_uid` (also kept for failed launches), or None."""
        found = self.api.get("/v1/models/instances", params={"model_uid": model_uid})
        return _instance(found[0]) if found else None

    def replicas(self, model_uid: str, check_reachable: bool = False) -> list[Replica]:
        """The replicas; with `check_reachable`, those listed READY but unreachable are UNREACHABLE."""
        replicas = [_replica(entry) for entry in self.api.get(f"/v1/models/{quote(model_uid, safe='')}/replicas")]
        if check_reachable:
            replicas = [
                Replica(**{**r.__dict__, "status": UNREACHABLE}) if r.ready and not replica_reachable(r) else r
                for r in replicas
            ]
        return replicas

    def launch(self, settings: LaunchSettings, threads: int | None) -> None:
        """Ask for the launch and return at once; `wait_until_ready` does the waiting, with a deadline."""
        self.api.post("/v1/models", params={"wait_ready": "false"}, json=launch_payload(settings, threads))

    def terminate(self, model_uid: str, timeout: float | None = None) -> None:
        # A model with replicas still loading takes its time (~20 s and more) to answer this.
        self.api.delete(f"/v1/models/{quote(model_uid, safe='')}", timeout=max(self.api.timeout, timeout or 0))

    def cancel_launch(self, model_uid: str, timeout: float = 60.0) -> None:
        """Stop a launch still loading (terminate answers "not found" until the model is listed); the
        server answers once its workers have stopped loading, ~20 s, and keeps the instance as ERROR."""
        self.api.post(f"/v1/models/{quote(model_uid, safe='')}/cancel", timeout=timeout)

    def add_replica(
        self, model_uid: str, worker_ip: str | None = None, gpu_idx: tuple[int, ...] = (), timeout: float = 600.0
    ) -> Replica:
        """One more replica of a running model; Xinference answers once it is READY (and routes to it
        only then). It runs with the launch settings of an existing replica: the placement and the
        GPUs are all that a new replica can change."""
        body: dict = {"replica": 1}
        if worker_ip or gpu_idx:
            device: dict = {"n_gpu": len(gpu_idx) if gpu_idx else 0, "gpu_idx": list(gpu_idx) or None}
            if worker_ip:
                device["worker_ip"] = worker_ip
            body["replica_config"] = {"devices": [device]}
        added = self.api.post(f"/v1/models/{quote(model_uid, safe='')}/replicas", json=body, timeout=timeout)
        found = [r for r in self.replicas(model_uid) if r.id == int(added["replica_id"])]
        return found[0] if found else Replica(int(added["replica_id"]), added.get("replica_model_uid"), "READY")

    def requests_in_flight(self, replica: Replica, metrics_url: str | None) -> int | None:
        """How many requests `replica` is serving, from its worker's Prometheus gauge
        `xinference:model_serve_count`; None when the worker's exporter is not known or not read."""
        if not metrics_url or not replica.uid:
            return None
        import re

        import requests

        base, _, index = replica.uid.rpartition("-rep")
        try:
            text = requests.get(metrics_url, timeout=2).text
        except requests.RequestException:
            return None
        pattern = re.compile(r"^xinference:model_serve_count\{([^}]*)\}\s+([0-9.eE+-]+)", re.MULTILINE)
        for labels, value in pattern.findall(text):
            if f'model_uid="{base}"' in labels and f'replica_index="{index}"' in labels:
                return int(float(value))
        return 0  # not served yet: the gauge appears with the replica's first request

    def remove_replica(self, model_uid: str, replica_id: int) -> int:
        """Stop one replica; returns how many remain. Xinference does not drain it: the requests it is
        serving fail (500, retried by xrerank's client), and routing forgets it ~0.5 s later."""
        answer = self.api.delete(f"/v1/models/{quote(model_uid, safe='')}/replicas/{int(replica_id)}")
        return int((answer or {}).get("remaining_replicas", 0))

    def wait_until_ready(
        self,
        model_uid: str,
        replica: int,
        deadline: float,
        on_progress: Callable[[list[str]], None] = lambda states: None,
    ) -> list[Replica]:
        """Poll the replicas until all `replica` of them are READY; raise on ERROR or at the deadline."""
        while True:
            try:
                replicas = self.replicas(model_uid)
            except ServerError as exc:
                if exc.status not in (400, 404, 503):
                    raise
                replicas = []
            states = [entry.status for entry in replicas]
            on_progress(states)
            ready = [entry for entry in replicas if entry.ready]
            if len(ready) >= replica and not any(state == CREATING for state in states):
                return ready  # a TERMINATED leftover of a worker that died does not hold this up
            failed = [entry for entry in replicas if entry.status in FAILED_STATES]
            if failed and (failed[0].status == "ERROR" or len(replicas) - len(failed) < replica):
                reason = launch_failure(failed[0].error or self._failure_reason(model_uid, failed[0].id))
                raise ServerError(f"replica {failed[0].id} of {model_uid} failed: {reason}")
            if not replicas:
                self._raise_if_launch_failed(model_uid)
            if time.monotonic() >= deadline:
                raise TimedOut(
                    f"{model_uid} not ready before the deadline (replicas: {', '.join(states) or 'none yet'}); "
                    "it may still be loading: run `xrerank status` or raise --wait"
                )
            time.sleep(1.0)

    def _failure_reason(self, model_uid: str, replica_id: int) -> str:
        """A failed replica's error message: the server can mark it ERROR a moment before it records why."""
        time.sleep(1.0)
        with contextlib.suppress(XrerankError):
            instance = self.instance(model_uid)
            for replica in [*self.replicas(model_uid), *(instance.replicas if instance else ())]:
                if replica.id == replica_id and replica.error:
                    return replica.error
        return "status ERROR (the server gave no reason yet: `xrerank status` shows it once recorded, its log has it)"

    def _raise_if_launch_failed(self, model_uid: str) -> None:
        record = self.instance(model_uid)
        if record and record.failed:
            errors = [r.error for r in record.replicas if r.error]
            raise ServerError(
                f"launch of {model_uid} failed: {launch_failure(errors[0] if errors else 'status ERROR')}"
            )

    # --- API keys (a user login with the keys permissions) -----------------------------------

    def create_key(self, name: str, model_uids: tuple[str, ...] = ()) -> tuple[ApiKey, str]:
        """A new API key (query and rerank only); returns it and its secret, which the server shows once."""
        body: dict = {"name": name}
        if model_uids:
            body["model_permissions"] = [{"permission_type": "model_id", "permission_value": u} for u in model_uids]
        created = self.api.post("/v1/admin/keys", json=body)
        return ApiKey(int(created["id"]), name, created.get("prefix", ""), True, tuple(model_uids)), created["key"]

    def api_keys(self) -> list[ApiKey]:
        answer = self.api.get("/v1/admin/keys")
        entries = answer.get("keys", answer.get("data", [])) if isinstance(answer, dict) else answer
        return [_api_key(entry) for entry in entries]

    def reveal_key(self, key_id: int) -> str:
        """An existing key's secret (Xinference keeps keys encrypted, and shows them to an admin)."""
        return self.api.get(f"/v1/admin/keys/{key_id}/reveal")["key"]

    def delete_key(self, key_id: int) -> None:
        self.api.delete(f"/v1/admin/keys/{int(key_id)}")

    def disable_key(self, key_id: int, new_name: str | None = None, description: str | None = None) -> None:
        # Disabled, not deleted: a client still sending it is then refused per key, and does not
        # count against its address's ban as an unknown key would. Renamed, its name is free again.
        body: dict = {"enabled": False}
        if new_name:
            body["name"] = new_name
        if description:
            body["description"] = description
        self.api.request("PUT", f"/v1/admin/keys/{int(key_id)}", json=body)


def _replica(entry: dict) -> Replica:
    gpus = entry.get("gpu_idx")
    return Replica(
        id=int(entry.get("replica_id", 0)),
        uid=entry.get("replica_model_uid"),
        status=str(entry.get("status", "?")),
        worker=entry.get("worker_address"),
        model_address=entry.get("model_address"),
        gpu_idx=tuple(gpus) if isinstance(gpus, list) else ((gpus,) if isinstance(gpus, int) else ()),
        created_ts=entry.get("created_ts"),
        error=entry.get("error_message"),
    )


# Why a model that ships code (auto_map) fails to load: Xinference 4.1 runs it only with this set.
REMOTE_CODE_HINT = (
    "the model ships its own code, which Xinference 4.1 runs only on a server started with "
    "XINFERENCE_TRUST_REMOTE_CODE=1 (for xrerank's embedded server: xrerank down, then xrerank up FILE "
    "with registration.trust_remote_code: true)"
)


def launch_failure(reason: str) -> str:
    """The server's reason for a failed load; a missing opt-in for a repository's own code, said plainly."""
    return REMOTE_CODE_HINT if "custom code" in reason or "trust_remote_code" in reason else reason


def _instance(record: dict) -> Instance:
    return Instance(
        uid=record["model_uid"],
        model_name=record.get("model_name", ""),
        status=str(record.get("status", "?")),
        replica=int(record.get("replica") or 0),
        created_ts=record.get("instance_created_ts"),
        replicas=tuple(_replica(entry) for entry in record.get("replica_statuses") or []),
    )


def _worker(node: dict, free_per_gpu: dict[int, int]) -> Worker:
    return Worker(
        address=node["ip_address"],
        cpu_count=node.get("cpu_count"),
        mem_available=node.get("mem_available"),
        mem_total=node.get("mem_total"),
        gpu_count=int(node.get("gpu_count") or 0),
        gpu_vram_available=node.get("gpu_vram_available"),
        gpu_vram_total=node.get("gpu_vram_total"),
        gpu_free=tuple(sorted(free_per_gpu.items())),
    )


def _api_key(entry: dict) -> ApiKey:
    permissions = entry.get("model_permissions") or []
    models = tuple(p.get("permission_value") for p in permissions if p.get("permission_type") == "model_id")
    return ApiKey(
        id=int(entry["id"]),
        name=entry.get("name", ""),
        prefix=entry.get("key_prefix") or entry.get("prefix", ""),
        enabled=bool(entry.get("enabled", True)),
        models=models,
        description=entry.get("description") or "",
    )
