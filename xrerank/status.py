"""One health report of a server and what it runs: a CI gate and a readiness probe."""

from __future__ import annotations

from .errors import ServerError
from .http import Refused
from .server import READY, Xinference


def gather_status(server: Xinference, model_uid: str | None = None, model_name: str | None = None) -> dict:
    """Server, workers, custom registrations and instances; `healthy` covers what was asked about.

    Asked about nothing in particular, the whole server must be healthy: every instance with
    all its replicas READY. Asked about a uid or a name, only those count.
    """
    status: dict = {"endpoint": server.endpoint, "auth": server.auth_enabled()}
    problems: list[str] = []
    workers: dict[str, dict] = {}
    registrations: list[str] | None = None
    try:
        status["version"] = server.version()
        workers = {w["ip_address"]: _worker_view(w) for w in server.workers()}
    except Refused:  # an API key sees models, not the cluster
        status.setdefault("version", None)
    except ServerError as exc:
        _cluster_problem(status, exc)
    try:
        registrations = [r["model_name"] for r in server.registrations() if not r["is_builtin"]]
    except ServerError as exc:
        _cluster_problem(status, exc)
    if "cluster_problem" in status and model_uid is None and model_name is None:
        problems.append(status["cluster_problem"])
    status["workers"] = list(workers.values())
    status["registrations"] = registrations
    instances = [_instance_view(i, server.checked_replicas(i["model_uid"])) for i in server.instances()]
    for instance in instances:
        for replica in instance["replicas"]:
            if replica["worker"] in workers:
                workers[replica["worker"]]["replicas"].append(f"{instance['model_uid']}#{replica['id']}")
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
    status["healthy"] = not problems
    status["problems"] = problems
    return status


def _cluster_problem(status: dict, error: ServerError) -> None:
    # The supervisor asks every worker for these; one worker that died makes the whole call fail.
    status["cluster_problem"] = f"the supervisor cannot reach every worker ({error})"


def _worker_view(worker: dict) -> dict:
    return {
        "address": worker["ip_address"],
        "cpu_count": worker.get("cpu_count"),
        "mem_available": worker.get("mem_available"),
        "mem_total": worker.get("mem_total"),
        "gpu_count": worker.get("gpu_count", 0),
        "gpu_vram_available": worker.get("gpu_vram_available"),
        "replicas": [],
    }


def _instance_view(instance: dict, checked: list[dict]) -> dict:
    """`checked`: the replicas with reachability tested, so a dead worker shows at once."""
    replicas = [
        {
            "id": r.get("replica_id"),
            "status": r.get("status"),
            "worker": r.get("worker_address"),
            "gpu_idx": r.get("gpu_idx"),
            "error": r.get("error_message"),
        }
        for r in checked or instance.get("replica_statuses", [])
    ]
    wanted = int(instance.get("replica") or 0)
    ready = sum(1 for r in replicas if r["status"] == READY)
    problems = []
    if instance.get("status") != READY or ready < wanted:
        not_ready = [f"#{r['id']} {r['status']} on {r['worker']}" for r in replicas if r["status"] != READY]
        problems.append(
            f"{instance['model_uid']}: {ready}/{wanted} replicas READY"
            + (f" ({', '.join(not_ready)})" if not_ready else "")
        )
    return {
        "model_uid": instance["model_uid"],
        "model_name": instance.get("model_name"),
        "status": instance.get("status"),
        "replica": wanted,
        "ready": ready,
        "replicas": replicas,
        "problems": problems,
    }
