"""The deployment's preflight: doctor's checks of the machine and the server, plus the deployment
file's model against the workers' room. `deploy` runs it before it changes anything."""

from __future__ import annotations

from xrerank.checks.doctor import (
    Finding,
    count_parameters,
    deployment_findings,
    family_findings,
    machine_findings,
    probe_machine,
    server_findings,
)
from xrerank.deploy.target import Target
from xrerank.xinference.local import embedded_at
from xrerank.xinference.records import LaunchSettings
from xrerank.xinference.server import Xinference
from xrerank.xinference.session import Session


def model_config(target: Target) -> tuple[dict | None, int | None]:
    """The config (and exact parameter count when the weights are here) of the model `target` deploys."""
    weights = target.deployment.weights
    config = target.source.read_config(target.weights, weights.model_id, weights.revision, weights.hub_endpoint)
    return config, count_parameters(target.weights) if target.weights.is_dir() else None


def preflight(server: Xinference, target: Target, machine: bool, adding: int | None = None) -> list[Finding]:
    """What `xrerank doctor FILE` checks; `deploy` runs it before it registers or launches. With
    `adding`, only that many new replicas need room (the running ones hold theirs already)."""
    findings = machine_findings(probe_machine()) if machine else []
    server_part, workers = server_findings(server, needs_admin=True)
    findings += server_part
    if workers and adding != 0:
        config, parameters = model_config(target)
        if config is not None and adding is None:
            embedded = embedded_at(server.endpoint)
            trusting = embedded.trust_remote_code if embedded else None
            findings += family_findings(config, server_here=on_this_machine(server), trusting=trusting)
        settings = target.settings if adding is None else _added(target.settings, adding)
        findings += deployment_findings(
            settings, target.deployment.registration.max_tokens, workers, config, parameters
        )
    return findings


def on_this_machine(server: Xinference) -> bool:
    """The server answers on a loopback address: it runs here, in all likelihood from this Python."""
    from urllib.parse import urlsplit

    host = urlsplit(server.endpoint).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _added(settings: LaunchSettings, adding: int) -> LaunchSettings:
    """`adding` more replicas of `settings`, each with as many GPUs as one of the deployment's."""
    if not settings.gpu_idx:
        return settings.with_(replica=adding)
    return settings.with_(replica=adding, gpu_idx=(), n_gpu=len(settings.gpu_idx) // settings.replica)


def examine(session: Session | None, target: Target | None) -> list[Finding]:
    """`xrerank doctor`: this machine; the server when one is named; the deployment against its workers."""
    findings = machine_findings(probe_machine())
    if target is not None and session is not None:
        findings += preflight(session.server, target, machine=False)
    elif session is not None:
        findings += server_findings(session.server, needs_admin=False)[0]
    return findings
