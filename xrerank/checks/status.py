"""One health report of a server and what it runs: a CI gate and a readiness probe."""

from __future__ import annotations

from pathlib import Path

from xrerank.client.http import Refused
from xrerank.errors import ServerError
from xrerank.xinference import ledger
from xrerank.xinference.records import Backend, Instance, Replica, Worker


def gather_status(server: Backend, home: Path, model_uid: str | None = None, model_name: str | None = None) -> dict:
    """Server, workers, custom registrations and instances; `healthy` covers what was asked about.

    Asked about nothing in particular, the whole server must be healthy: every instance with
    all its replicas READY. Asked about a uid or a name, only those count. `home` holds xrerank's
    record of what each replica was launched with.
    """
    status: dict = {"endpoint": server.endpoint, "auth": server.auth_enabled(), "version": None}
    problems: list[str] = []
    workers: dict[str, dict] = {}
    registrations: list[str] | None = None
    try:
        status["version"] = server.version()
        workers = {w.address: _worker_view(w) for w in server.workers()}
    except Refused:  # an API key sees models, not the cluster
        pass
    except ServerError as exc:
        _cluster_problem(status, exc)
    try:
        registrations = server.registration_names()
    except ServerError as exc:
        _cluster_problem(status, exc)
    if "cluster_problem" in status and model_uid is None and model_name is None:
        problems.append(status["cluster_problem"])
    status["workers"] = list(workers.values())
    status["registrations"] = registrations
    instances = []
    for instance in server.instances():
        if instance.failed and ledger.was_cancelled(home, server.endpoint, instance):
            instances.append(_cancelled_view(instance))  # its launch was stopped on purpose
            continue
        checked = server.replicas(instance.uid, check_reachable=True) if not instance.failed else []
        settings = ledger.launched_with(home, server.endpoint, instance)
        instances.append(_instance_view(instance, checked or list(instance.replicas), settings))
    for instance in instances:
        for replica in instance["replicas"]:
            if replica["worker"] in workers:
                workers[replica["worker"]]["replicas"].append(f"{instance['model_uid']}#{replica['id']}")
                for index in replica["gpu_idx"] or []:
                    per_gpu = workers[replica["worker"]]["replicas_per_gpu"]
                    per_gpu[str(index)] = per_gpu.get(str(index), 0) + 1
    status["models"] = instances
    status["totals"] = {
        "workers": len(workers),
        "cpu_count": sum(w["cpu_count"] or 0 for w in workers.values()),
        "mem_available": sum(w["mem_available"] or 0 for w in workers.values()),
        "gpu_count": sum(w["gpu_count"] or 0 for w in workers.values()),
        "replicas": sum(len(i["replicas"]) for i in instances),
        "ready": sum(i["ready"] for i in instances),
    }
    if model_name is not None and registrations is not None and model_name not in registrations:
        problems.append(f"{model_name} is not registered")
    asked = [i for i in instances if model_uid is None or i["model_uid"] == model_uid]
    if model_uid is not None and not asked:
        problems.append(f"{model_uid} is not running")
    for instance in asked:
        problems += instance["problems"]
        if model_uid is not None and instance["status"] == "CANCELLED":
            problems.append(f"{model_uid} is not running: its launch was cancelled")
    status["healthy"] = not problems
    status["problems"] = problems
    return status


def _cluster_problem(status: dict, error: ServerError) -> None:
    # The supervisor asks every worker for these; one worker that died makes the whole call fail.
    status["cluster_problem"] = f"the supervisor cannot reach every worker ({error})"


def _worker_view(worker: Worker) -> dict:
    return {
        "address": worker.address,
        "cpu_count": worker.cpu_count,
        "mem_available": worker.mem_available,
        "mem_total": worker.mem_total,
        "gpu_count": worker.gpu_count,
        "gpu_vram_available": worker.gpu_vram_available,
        "replicas": [],
        "replicas_per_gpu": {},
    }


def _cancelled_view(instance: Instance) -> dict:
    return {
        "model_uid": instance.uid,
        "model_name": instance.model_name,
        "status": "CANCELLED",  # ours: Xinference keeps a cancelled launch as ERROR until the uid is launched again
        "replica": instance.replica,
        "ready": 0,
        "replicas": [],
        "problems": [],
    }


def _instance_view(instance: Instance, replicas: list[Replica], settings: dict[str, dict | None]) -> dict:
    """`replicas`: checked for reachability, so a dead worker shows at once. Each replica's launch
    settings are shown where they differ within the instance (a rolling change under way)."""
    differ = len({repr(value) for value in settings.values()}) > 1
    views = [
        {
            "id": r.id,
            "status": r.status,
            "worker": r.worker,
            "gpu_idx": list(r.gpu_idx),
            "error": r.error,
            "settings": settings.get(ledger.replica_key(r)) if differ else None,
        }
        for r in replicas
    ]
    ready = sum(r.ready for r in replicas)
    problems = []
    if instance.status != "READY" or ready < instance.replica:
        not_ready = [r.describe() for r in replicas if not r.ready]
        problems.append(
            f"{instance.uid}: {ready}/{instance.replica} replicas READY"
            + (f" ({', '.join(not_ready)})" if not_ready else "")
        )
    return {
        "model_uid": instance.uid,
        "model_name": instance.model_name,
        "status": instance.status,
        "replica": instance.replica,
        "ready": ready,
        "replicas": views,
        "problems": problems,
    }
