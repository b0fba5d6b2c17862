"""What a model directory holds: is it a reranker of a known family, is it complete, and is it ours.

A directory is complete when its manifest (written last, atomically) lists every file with
the size found on disk. A download in progress leaves a marker instead, so a directory that
a failed or interrupted download left behind is never taken for a model.

xrerank writes weights only into a directory that is new, empty, or already its own (a
manifest or an in-progress marker), so every file its manifest lists is one it wrote. That is
what lets `purge` delete weights: it removes the listed files that are unchanged, and nothing
else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from xrerank.errors import BadInput, XrerankError
from xrerank.families import Family, detect
from xrerank.files import read_json, write_json_atomically

MANIFEST = "xrerank-manifest.json"
IN_PROGRESS = ".xrerank-download-in-progress"

TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer.model", "spiece.model", "vocab.txt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelDir:
    path: Path
    family: Family
    model_type: str
    max_tokens_limit: int | None
    config: dict = field(default_factory=dict, compare=False, repr=False)


def inspect_model_dir(path: str | os.PathLike[str], downloading: bool = False) -> ModelDir:
    """Check that `path` holds a complete reranker of a family xrerank knows, or raise BadInput.

    `downloading` is for the downloader's own check, made before it removes its in-progress marker.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise BadInput(f"model directory {directory} does not exist or is not a directory")
    directory = directory.resolve()
    if not downloading and (directory / IN_PROGRESS).exists():
        raise BadInput(f"{directory} holds an unfinished download; run `xrerank download` again to resume it")
    config = _read_config(directory)  # first: a directory without one is not searched any further
    if any(directory.rglob("*.incomplete")):
        raise BadInput(f"{directory} holds an unfinished download; run `xrerank download` again to resume it")
    family = detect(config, directory)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise BadInput(f"{directory} has no tokenizer (looked for {', '.join(TOKENIZER_FILES)})")
    _check_weights(directory)
    return ModelDir(directory, family, str(config.get("model_type", "")), family.token_limit(config), config)


def _read_config(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BadInput(f"{directory} has no config.json; this is not a transformers model directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise BadInput(f"{config_path} is not a JSON object")
    return config


def _check_weights(directory: Path) -> None:
    if any((directory / name).is_file() for name in WEIGHT_FILES):
        return
    for index_name in SHARD_INDEXES:
        index_path = directory / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map", {})
                shards = {str(shard) for shard in weight_map.values()}
            except (ValueError, UnicodeDecodeError, AttributeError) as exc:
                raise BadInput(f"{index_path} is not a shard index (a JSON object with a weight_map): {exc}") from None
            missing = sorted(s for s in shards if not (directory / s).is_file())
            if missing:
                raise BadInput(f"{directory} is missing weight shards: {', '.join(missing)}")
            return
    raise BadInput(f"{directory} has no weights (looked for {', '.join(WEIGHT_FILES + SHARD_INDEXES)})")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def claim_directory(directory: Path) -> None:
    """Make `directory` ours to write weights into: new, empty, or already xrerank's; else BadInput."""
    if directory.exists() and not directory.is_dir():
        raise BadInput(f"{directory} is a file, not a directory; choose a new directory for the weights")
    if directory.is_dir() and not is_ours(directory) and any(directory.iterdir()):
        raise BadInput(
            f"{directory} already holds files that xrerank did not write; choose an empty or new directory "
            "for the weights (or `source: local` to use a directory as it is)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / IN_PROGRESS).touch()


def is_ours(directory: Path) -> bool:
    """Did xrerank make `directory`: a manifest, or the marker of a download it started?"""
    return (directory / MANIFEST).is_file() or (directory / IN_PROGRESS).is_file()


def write_manifest(directory: Path, source: dict, skip: tuple[str, ...] = ()) -> dict:
    """Hash every file and write the manifest last, atomically: from then on the directory is complete.

    `skip`: top-level names that belong to the hub client (its metadata), not to the model."""
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, IN_PROGRESS) and p.relative_to(directory).parts[0] not in skip
    }
    for path in directory.rglob("*"):  # the server may run as another user
        path.chmod(0o755 if path.is_dir() else 0o644)
    manifest = {"version": 1, **source, "files": files, "client_metadata": list(skip)}
    write_json_atomically(directory / MANIFEST, manifest)
    (directory / IN_PROGRESS).unlink(missing_ok=True)
    return manifest


def read_complete_manifest(directory: Path) -> dict | None:
    """The manifest if the directory is complete (every listed file there with its size), else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or (directory / IN_PROGRESS).exists():
        return None
    for name, entry in (manifest.get("files") or {}).items():
        file_path = directory / name
        if not file_path.is_file() or file_path.stat().st_size != entry.get("size"):
            return None
    return manifest


@dataclass
class Purge:
    directory: Path
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # files xrerank did not write, or that changed since

    @property
    def removed_directory(self) -> bool:
        return not self.directory.exists()


class NotOurs(XrerankError):
    """xrerank refuses to delete what it cannot prove it wrote."""


def purge(directory: Path) -> Purge:
    """Delete the weights xrerank wrote into `directory`: the files its manifest lists, where they are
    unchanged (same size and sha256), its own markers, the hub client's metadata, and then the
    directories left empty. Anything else stays, and so does the directory that holds it."""
    directory = directory.resolve()
    manifest = read_json(directory / MANIFEST)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        unfinished = " (an unfinished download: run it again to complete it)" if is_ours(directory) else ""
        raise NotOurs(
            f"not deleting {directory}: it has no xrerank manifest{unfinished}, so xrerank cannot tell which "
            "files it wrote; delete it yourself if you mean to"
        )
    result = Purge(directory)
    for name, entry in manifest["files"].items():
        path = (directory / name).resolve()
        if directory not in path.parents or path.is_symlink() or not path.is_file():
            result.kept.append(name)
            continue
        if path.stat().st_size != entry.get("size") or sha256_of(path) != entry.get("sha256"):
            result.kept.append(name)
            continue
        path.unlink()
        result.deleted.append(name)
    for name in manifest.get("client_metadata") or []:
        metadata = directory / name
        if metadata.is_dir() and not metadata.is_symlink() and directory in metadata.resolve().parents:
            shutil.rmtree(metadata)
    (directory / MANIFEST).unlink(missing_ok=True)
    (directory / IN_PROGRESS).unlink(missing_ok=True)
    for sub in sorted((p for p in directory.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    result.kept += sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if not p.is_dir())
    result.kept = sorted(set(result.kept) - set(result.deleted))
    if not any(directory.iterdir()):
        directory.rmdir()
    return result
