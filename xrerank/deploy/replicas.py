"""Changing a running model replica by replica, so that its uid keeps answering: scale, heal, roll.

Xinference 4.1 adds a replica to a running model (POST /v1/models/{uid}/replicas, answered once
the new replica is READY; routing includes it only then) and removes one (DELETE
.../replicas/{id}). A removal is not drained by the server: requests the replica is serving, and
those routed to it in the ~0.5 s before routing forgets it, fail with a 500 that xrerank's client
retries. So before a removal xrerank waits, up to a deadline, for the replica's in-flight
requests (Xinference's own `model_serve_count` gauge) to reach zero.

A new replica takes the launch settings of an existing one; only its worker and GPUs can differ.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from xrerank.deploy.plan import Desired, gpu_shares, misplaced
from xrerank.errors import ServerError, TimedOut, XrerankError, worker_lost
from xrerank.xinference import ledger
from xrerank.xinference.records import Replica
from xrerank.xinference.session import Session

Progress = Callable[[str], None]
DRAIN_SECONDS = 10.0  # the longest a removal waits for its replica's requests to finish


def scale(session: Session, uid: str, count: int, deadline: float, progress: Progress,
          desired: Desired | None = None) -> str:  # fmt: skip
    """Add or remove replicas of `uid` in place until it has `count`; "unchanged" when it has."""
    if count < 1:
        raise XrerankError(f"a model keeps at least one replica; to stop {uid}, terminate it")
    server = session.server
    replicas = [r for r in server.replicas(uid, check_reachable=True) if not r.lost]
    if not replicas:
        raise XrerankError(f"{uid} has no healthy replica to scale from; run deploy to launch it again")
    if len(replicas) == count:
        if all(replica.ready for replica in replicas):
            return "unchanged"
        progress(f"{uid}: {count} replica(s), not all READY yet; waiting for them")
        server.wait_until_ready(uid, count, deadline)
        return "resumed"
    progress(f"{uid}: scale {len(replicas)} -> {count} replicas in place")
    free = _free_shares(desired, replicas) if desired else []
    while len(replicas) < count:
        placement = free.pop(0) if free else ()
        replicas.append(_add(session, uid, desired, placement, deadline, progress))
    for replica in sorted(replicas, key=lambda r: r.id, reverse=True)[: len(replicas) - count]:
        _remove(session, uid, replica, deadline, progress)  # the newest first; the first stays as the template
    return "scaled"


def heal(session: Session, desired: Desired, deadline: float, progress: Progress) -> str:
    """Remove the lost replicas (their worker died) and add new ones on live workers; the healthy stay."""
    server, uid = session.server, desired.uid
    replicas = server.replicas(uid, check_reachable=True)
    lost, healthy = [r for r in replicas if r.lost], [r for r in replicas if not r.lost]
    for replica in lost:
        progress(f"{uid}: removing replica #{replica.id} ({replica.status} on {replica.worker})")
        _forget(session, uid, replica, deadline)
    free = _free_shares(desired, healthy)
    for _ in range(desired.replica - len(healthy)):
        _add(session, uid, desired, free.pop(0) if free else (), deadline, progress)
    return "healed"


def repair(session: Session, desired: Desired, deadline: float, progress: Progress) -> str:
    """Clear the ERROR mark Xinference leaves on a model whose change failed while its replicas answer:
    a replica added successfully clears it. The added one is removed again unless the model was short."""
    server, uid = session.server, desired.uid
    healthy = [r for r in server.replicas(uid, check_reachable=True) if not r.lost]
    progress(f"{uid}: marked ERROR while {len(healthy)} replica(s) answer; adding one to clear the mark")
    added = _add(session, uid, desired, (_free_shares(desired, healthy) or [()])[0], deadline, progress)
    if len(healthy) >= desired.replica:
        _remove(session, uid, added, deadline, progress)
    return "repaired"


def roll(session: Session, desired: Desired, deadline: float, progress: Progress) -> str:
    """Replace the replicas on the wrong worker or GPUs one at a time: add one placed right, wait until
    it is READY and answers, then remove one placed wrong. Ends with the desired count."""
    server, uid = session.server, desired.uid
    replicas = [r for r in server.replicas(uid) if not r.lost]
    wrong = misplaced(desired, replicas)
    placed = [r for r in replicas if r not in wrong]
    free = _free_shares(desired, placed)
    for old in wrong:
        if len(placed) < desired.replica:
            placed.append(_add(session, uid, desired, free.pop(0) if free else (), deadline, progress))
        _remove(session, uid, old, deadline, progress)
    return (
        scale(session, uid, desired.replica, deadline, progress, desired)
        if len(placed) != desired.replica
        else "rolled"
    )


def _free_shares(desired: Desired | None, placed: list[Replica]) -> list[tuple[int, ...]]:
    """The GPU shares of the deployment that no placed replica holds yet (none on CPU)."""
    if desired is None or not desired.gpu_idx:
        return []
    free = Counter(gpu_shares(desired))
    free.subtract(Counter(tuple(r.gpu_idx) for r in placed))
    return [share for share, count in free.items() for _ in range(max(0, count))]


def _add(session: Session, uid: str, desired: Desired | None, gpus: tuple[int, ...], deadline: float,
         progress: Progress) -> Replica:  # fmt: skip
    server = session.server
    worker_ip = desired.worker_ip if desired else None
    where = (f" on {worker_ip}" if worker_ip else "") + (f" on GPU {','.join(map(str, gpus))}" if gpus else "")
    progress(f"{uid}: adding a replica{where} (answered once it is READY)")
    template = _template_tuning(session, uid)
    if template is not None:
        ledger.record_pending(session.home, server.endpoint, uid, template)
    while True:
        try:
            replica = server.add_replica(uid, worker_ip, gpus, timeout=max(1.0, deadline - time.monotonic()))
            break
        except ServerError as exc:
            # A worker that just died is still the least loaded one until the supervisor notices (~20 s).
            if not worker_lost(exc):
                raise
            if time.monotonic() > deadline:
                raise TimedOut(f"{uid}: no live worker took the new replica before the deadline: {exc}") from None
            time.sleep(2.0)
    instance = server.instance(uid)
    if instance is not None and template is not None:
        added = [r for r in instance.replicas if r.id == replica.id]
        ledger.record_launch(session.home, server.endpoint, instance, template, added)
    progress(f"{uid}: replica #{replica.id} READY on {replica.worker}")
    return replica


def _template_tuning(session: Session, uid: str) -> dict | None:
    """What a new replica runs with: the settings of the replica Xinference copies (the first active)."""
    instance = session.server.instance(uid)
    if instance is None or not instance.replicas:
        return None
    recorded = ledger.launched_with(session.home, session.endpoint, instance)
    first = min(instance.replicas, key=lambda r: r.id)
    return recorded.get(ledger.replica_key(first))


def _remove(session: Session, uid: str, replica: Replica, deadline: float, progress: Progress) -> None:
    progress(f"{uid}: removing replica #{replica.id} on {replica.worker} (draining first)")
    drained = drain(session, replica, min(deadline, time.monotonic() + DRAIN_SECONDS))
    if not drained:
        progress(f"{uid}: replica #{replica.id} still busy at the drain deadline; removing it (clients retry)")
    _forget(session, uid, replica, deadline)


def _forget(session: Session, uid: str, replica: Replica, deadline: float) -> None:
    """Remove `replica`. One on a dead worker cannot be stopped there: the supervisor lets it go once
    it notices the worker is gone (~20 s), and then the removal takes its leftover entry."""
    server = session.server
    while True:
        try:
            server.remove_replica(uid, replica.id)
            break
        except ServerError as exc:
            if "not found" in str(exc).lower():
                break  # gone already
            if not replica.lost or time.monotonic() > deadline:
                raise
            time.sleep(2.0)
    instance = session.server.instance(uid)
    if instance is not None:
        ledger.prune(session.home, session.endpoint, instance)


def drain(session: Session, replica: Replica, deadline: float) -> bool:
    """Wait until `replica` serves no request (Xinference's per-replica gauge), or the deadline; True
    when it reached zero. False at once when the gauge cannot be read (the removal then relies on
    client retries)."""
    metrics_url = session.metrics_url()
    while True:
        serving = session.server.requests_in_flight(replica, metrics_url)
        if serving is None:
            return False
        if serving == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
