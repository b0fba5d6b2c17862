"""Where weights come from: one interface, one module per source, one registry.

A source makes a model directory complete (downloads, generates, or only checks it), says
whether it is complete, reads the model's config.json without fetching everything, and says
whether xrerank may delete the weights (only what it wrote itself). deploy, doctor, destroy and
the CLI go through `source_for(name)`; adding a source is one module and one line in SOURCES.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from xrerank.errors import BadInput, XrerankError

# name -> module in this package; each module defines SOURCE.
SOURCES = {"modelscope": "modelscope", "huggingface": "huggingface", "local": "local", "demo": "demo"}


@dataclass(frozen=True)
class Fetched:
    directory: Path
    manifest: dict
    changed: bool


class WeightSource:
    """The interface, with the behaviour most sources share: a manifest proves completeness."""

    name = ""
    owns_weights = True  # xrerank wrote the files, so `destroy --purge-weights` may delete them
    needs_model_id = False
    needs_dir = False
    default_revision: str | None = None

    def problem(self, model_id: str | None, directory: str | None) -> str | None:
        """What a deployment file's `weights:` lacks for this source, or None."""
        if self.needs_model_id and not model_id:
            return f"source {self.name} needs model_id, e.g. {self.example_model_id}"
        if self.needs_dir and not directory:
            return f"source {self.name} needs dir: the directory that holds the weights"
        return None

    example_model_id = ""

    def ensure(self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None) -> Fetched:
        """Make `directory` a complete model; a complete one is left as it is."""
        raise NotImplementedError

    def is_complete(self, directory: Path, model_id: str | None = None) -> bool:
        """Does `directory` hold the whole model (`model_id`'s, where the source can tell)?"""
        from xrerank.weights.modeldir import read_complete_manifest

        return read_complete_manifest(directory) is not None

    def read_config(
        self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None
    ) -> dict | None:
        """The model's config.json: from `directory` when it is there, else None (hubs fetch it alone)."""
        return read_config_file(directory)


def source_for(name: str) -> WeightSource:
    if name not in SOURCES:
        raise BadInput(f"unknown weights source {name!r}; one of: {', '.join(SOURCES)}")
    return importlib.import_module(f".{SOURCES[name]}", __name__).SOURCE


def read_config_file(directory: Path) -> dict | None:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


class HubSource(WeightSource):
    """A model hub reached through its own client: snapshot into a directory xrerank owns, check the
    result is a cross-encoder, write the manifest last. Subclasses call their client."""

    needs_model_id = True
    endpoint_env = ""  # the variable the hub's own client reads
    default_endpoint = ""
    client_metadata: tuple[str, ...] = ()  # what the client keeps inside the directory (not the model)

    def endpoint(self, explicit: str | None = None) -> str | None:
        """The hub to use: the flag or file, then the client's own variable; None lets the client choose."""
        endpoint = explicit or os.environ.get(self.endpoint_env)
        if endpoint and "://" not in endpoint:
            # The clients silently turn a bare host into https://, which fails on a plain-HTTP mirror.
            raise BadInput(f"hub endpoint {endpoint!r} needs a scheme, e.g. http://{endpoint}")
        return endpoint

    def ensure(self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None) -> Fetched:
        return self.download(model_id or "", directory, revision, endpoint)

    def download(
        self, model_id: str, local_dir: str | Path, revision: str | None = None, endpoint: str | None = None
    ) -> Fetched:
        """Make `local_dir` a complete copy of `model_id` at `revision`; a complete directory is a no-op."""
        from xrerank.weights.modeldir import claim_directory, inspect_model_dir, read_complete_manifest, write_manifest

        directory = Path(local_dir).expanduser().resolve()
        revision = revision or self.default_revision
        manifest = read_complete_manifest(directory)
        if manifest is not None:
            if (manifest.get("source"), manifest.get("model_id"), manifest.get("revision")) != (
                self.name,
                model_id,
                revision,
            ):
                raise BadInput(
                    f"{directory} already holds {manifest.get('model_id')}@{manifest.get('revision')} "
                    f"from {manifest.get('source')}; choose another directory for {model_id}@{revision}"
                )
            return Fetched(directory, manifest, changed=False)
        endpoint = self.endpoint(endpoint)
        claim_directory(directory)
        self.snapshot(model_id, directory, revision, endpoint)
        try:
            inspect_model_dir(directory, downloading=True)
        except BadInput as exc:
            raise XrerankError(f"the files of {model_id} are not a usable reranker: {exc}") from None
        source = {
            "source": self.name,
            "endpoint": endpoint or self.default_endpoint,
            "model_id": model_id,
            "revision": revision,
        }
        return Fetched(directory, write_manifest(directory, source, skip=self.client_metadata), changed=True)

    def read_config(
        self, directory: Path, model_id: str | None, revision: str | None, endpoint: str | None
    ) -> dict | None:
        config = read_config_file(directory)
        if config is not None or not model_id:
            return config
        try:
            return self.fetch_config(model_id, revision or self.default_revision, self.endpoint(endpoint))
        except XrerankError:
            return None

    def snapshot(self, model_id: str, directory: Path, revision: str | None, endpoint: str | None) -> None:
        """Every file of the model into `directory`, checked."""
        raise NotImplementedError

    def fetch_files(
        self, model_id: str, directory: Path, revision: str | None, endpoint: str | None, patterns: list[str] | None
    ) -> None:
        """The files matching `patterns` (None: every file) into `directory`."""
        raise NotImplementedError

    def fetch_config(self, model_id: str, revision: str | None, endpoint: str | None) -> dict:
        """Only config.json, for sizing a deployment before its weights are downloaded."""
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            self.fetch_files(model_id, Path(scratch), revision, endpoint, ["config.json"])
            config = read_config_file(Path(scratch))
        if config is None:
            raise XrerankError(f"{model_id}@{revision} has no readable config.json")
        return config


def summary(exc: BaseException) -> str:
    """A client's first two lines: for integrity failures the second names the file and the hashes."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


def network_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("NameResolution", "host name not resolved"),
        ("timed out", "timed out"),
    ):
        if marker in text:
            return reason
    return summary(exc)[:200]
