"""What xrerank remembers about the models it launched and verified, per server, in $XRERANK_HOME.

The server does not report the threads, micro-batching, fp16 or environment a replica was
launched with, so every launch by xrerank records them, per replica; a replica without a record
was launched by something else, and its settings are unknown. A verification stamp ties a
passed verification to the exact instance and replicas it checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from xrerank.files import DamagedState, file_name, private_directory, read_json, write_json_atomically
from xrerank.xinference.records import Instance, Replica

PENDING_SECONDS = 3600  # a launch request older than this no longer explains an unknown replica


def _path(home: Path, endpoint: str, uid: str, kind: str) -> Path:
    server = endpoint.split("://", 1)[-1]
    return private_directory(home / "deployments") / file_name(uid, server, suffix=f".{kind}.json")


def _read(path: Path) -> dict:
    """A record, {} when there is none; a damaged one is reported, never taken as empty in silence."""
    try:
        return read_json(path, strict=True) or {}
    except DamagedState as exc:
        raise DamagedState(
            f"{exc}; delete it to go on: xrerank then takes the model's replicas as launched outside xrerank "
            "(deploy --replace relaunches them)"
        ) from None


def replica_key(replica: Replica) -> str:
    return f"{replica.uid or replica.id}@{replica.created_ts}"


def record_pending(home: Path, endpoint: str, uid: str, tuning: dict) -> None:
    """Before asking for a launch or new replicas: a run killed before `record_launch` still left this."""
    path = _path(home, endpoint, uid, "launch")
    record = _read(path)
    record["pending"] = {"tuning": tuning, "requested_at": time.time()}
    write_json_atomically(path, record)


def record_launch(
    home: Path, endpoint: str, instance: Instance, tuning: dict, replicas: Iterable[Replica] = ()
) -> None:
    """`replicas` (default: all of the instance's) run with `tuning`; records of gone replicas are dropped."""
    path = _path(home, endpoint, instance.uid, "launch")
    record = _read(path)
    known = record.get("replicas", {}) if record.get("instance_created_ts") == instance.created_ts else {}
    current = {replica_key(r) for r in instance.replicas}
    known = {key: value for key, value in known.items() if key in current}
    for replica in replicas or instance.replicas:
        known[replica_key(replica)] = tuning
    write_json_atomically(path, {"instance_created_ts": instance.created_ts, "replicas": known})


def prune(home: Path, endpoint: str, instance: Instance) -> None:
    """Drop the records of replicas the instance no longer has (removed, or lost with their worker)."""
    path = _path(home, endpoint, instance.uid, "launch")
    record = _read(path)
    if record.get("instance_created_ts") != instance.created_ts:
        return
    current = {replica_key(r) for r in instance.replicas}
    record["replicas"] = {key: value for key, value in record.get("replicas", {}).items() if key in current}
    write_json_atomically(path, record)


def launched_with(home: Path, endpoint: str, instance: Instance | None) -> dict[str, dict | None]:
    """Each replica's recorded tuning (key: replica_key), None for a replica xrerank did not launch.

    A pending request explains replicas that appeared since it was made (the run that made it
    was killed before it could record them)."""
    if instance is None:
        return {}
    record = _read(_path(home, endpoint, instance.uid, "launch"))
    known = record.get("replicas", {}) if record.get("instance_created_ts") == instance.created_ts else {}
    pending = record.get("pending") or {}
    fresh = time.time() - float(pending.get("requested_at") or 0) < PENDING_SECONDS
    return {
        replica_key(r): known.get(replica_key(r), pending.get("tuning") if fresh else None) for r in instance.replicas
    }


def forget(home: Path, endpoint: str, uid: str) -> None:
    for kind in ("launch", "verified", "cancelled"):
        _path(home, endpoint, uid, kind).unlink(missing_ok=True)


def record_cancelled(home: Path, endpoint: str, instance: Instance) -> None:
    """xrerank cancelled this launch: the server keeps listing it as ERROR, which is no failure."""
    write_json_atomically(
        _path(home, endpoint, instance.uid, "cancelled"),
        {"instance_created_ts": instance.created_ts, "cancelled_at": time.time()},
    )


def was_cancelled(home: Path, endpoint: str, instance: Instance) -> bool:
    record = read_json(_path(home, endpoint, instance.uid, "cancelled")) or {}
    return bool(record) and record.get("instance_created_ts") == instance.created_ts


def stamp_verified(home: Path, endpoint: str, instance: Instance, fingerprint: str, suite: str) -> None:
    write_json_atomically(
        _path(home, endpoint, instance.uid, "verified"),
        {"identity": _identity(instance), "fingerprint": fingerprint, "suite": suite, "verified_at": time.time()},
    )


def is_verified(home: Path, endpoint: str, instance: Instance | None, fingerprint: str) -> bool:
    """Did a verification pass against this very instance and these very replicas, for this deployment?"""
    if instance is None:
        return False
    stamp = _read(_path(home, endpoint, instance.uid, "verified"))
    return stamp.get("fingerprint") == fingerprint and stamp.get("identity") == _identity(instance)


def _identity(instance: Instance) -> list:
    return [instance.created_ts, sorted(replica_key(r) for r in instance.replicas)]
