"""Weights from ModelScope, through the real `modelscope` client, into a directory we can trust.

snapshot_download verifies each file's sha256 against the hub's listing and resumes partial
`*.incomplete` files. We add what it lacks: a marker while a download is under way, a check that
the result is a loadable cross-encoder, and a manifest written last. A directory without a
manifest is never reported complete.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput, Unreachable, XrerankError
from .modeldir import IN_PROGRESS, inspect_model_dir, read_complete_manifest, write_manifest

DEFAULT_HUB = "https://modelscope.cn"


@dataclass(frozen=True)
class Download:
    directory: Path
    manifest: dict
    changed: bool


def hub_endpoint(explicit: str | None = None) -> str | None:
    """The hub to use: the flag, then MODELSCOPE_ENDPOINT; None lets the client choose."""
    endpoint = explicit or os.environ.get("MODELSCOPE_ENDPOINT")
    if endpoint and "://" not in endpoint:
        # The client would silently turn a bare host into https://, which fails on a plain-HTTP mirror.
        raise BadInput(f"hub endpoint {endpoint!r} needs a scheme, e.g. http://{endpoint}")
    return endpoint


def download(model_id: str, local_dir: str | Path, revision: str = "master", endpoint: str | None = None) -> Download:
    """Make `local_dir` a complete copy of `model_id` at `revision`; a complete directory is a no-op."""
    directory = Path(local_dir).expanduser().resolve()
    manifest = read_complete_manifest(directory)
    if manifest is not None:
        if (manifest.get("model_id"), manifest.get("revision")) != (model_id, revision):
            raise BadInput(
                f"{directory} already holds {manifest.get('model_id')}@{manifest.get('revision')}; "
                f"choose another --local-dir for {model_id}@{revision}"
            )
        return Download(directory, manifest, changed=False)
    endpoint = hub_endpoint(endpoint)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / IN_PROGRESS).touch()
    _snapshot(model_id, directory, revision, endpoint)
    try:
        inspect_model_dir(directory, downloading=True)
    except BadInput as exc:
        raise XrerankError(f"the files of {model_id} are not a usable reranker: {exc}") from None
    source = {"source": "modelscope", "endpoint": endpoint or DEFAULT_HUB, "model_id": model_id, "revision": revision}
    return Download(directory, write_manifest(directory, source), changed=True)


def _snapshot(model_id: str, directory: Path, revision: str, endpoint: str | None) -> None:
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    from modelscope import snapshot_download

    _call_hub(
        lambda: snapshot_download(model_id, revision=revision, local_dir=str(directory), endpoint=endpoint),
        model_id,
        revision,
        endpoint,
    )


def _call_hub(call, model_id: str, revision: str, endpoint: str | None) -> None:
    """Run one modelscope call; its errors become one line with our exit codes."""
    import requests
    from modelscope_hub.errors import HubError, NetworkError

    where = endpoint or DEFAULT_HUB
    try:
        call()
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise XrerankError(f"{model_id}@{revision} does not exist on {where}; check the model id") from None
        if status in (401, 403):
            raise Unreachable(f"{where} refused {model_id} ({status}); set MODELSCOPE_API_TOKEN") from None
        raise XrerankError(f"download of {model_id} from {where} failed: {_summary(exc)}") from None
    except NetworkError as exc:
        raise Unreachable(
            f"cannot reach the model hub at {where} ({_network_reason(exc)}); "
            "offline? try the demo model: xrerank up --demo"
        ) from None
    except HubError as exc:
        raise XrerankError(
            f"download of {model_id} from {where} failed, run it again to resume: {_summary(exc)}"
        ) from None


def _summary(exc: BaseException) -> str:
    """The client's first two lines: for integrity failures the second names the file and the hashes."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


def _network_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("NameResolution", "host name not resolved"),
        ("timed out", "timed out"),
    ):
        if marker in text:
            return reason
    return _summary(exc)[:200]


def fetch_config(model_id: str, revision: str = "master", endpoint: str | None = None) -> dict:
    """Only the model's config.json, for sizing a deployment before its weights are downloaded."""
    import json
    import tempfile

    endpoint = hub_endpoint(endpoint)
    with tempfile.TemporaryDirectory() as scratch:
        from modelscope import snapshot_download

        _call_hub(
            lambda: snapshot_download(
                model_id, revision=revision, local_dir=scratch, endpoint=endpoint, allow_patterns=["config.json"]
            ),
            model_id,
            revision,
            endpoint,
        )
        return json.loads((Path(scratch) / "config.json").read_text(encoding="utf-8"))
