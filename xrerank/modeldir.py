"""What a model directory holds: is it a loadable cross-encoder, and is it complete.

A directory is complete when its manifest (written last, atomically) lists every file with
the size found on disk. A download in progress leaves a marker instead, so a directory that
a failed or interrupted download left behind is never taken for a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

MANIFEST = "xrerank-manifest.json"
IN_PROGRESS = ".xrerank-download-in-progress"

TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer.model", "spiece.model", "vocab.txt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# RoBERTa-family models number positions from padding_idx + 1, so two positions are never usable.
POSITION_OFFSET_MODEL_TYPES = {"xlm-roberta": 2, "roberta": 2, "camembert": 2, "xlm-roberta-xl": 2}


@dataclass(frozen=True)
class CrossEncoderDir:
    path: Path
    architecture: str
    model_type: str
    max_tokens_limit: int | None


def inspect_model_dir(path: str | os.PathLike[str], downloading: bool = False) -> CrossEncoderDir:
    """Check that `path` holds a one-label sequence-classification model, or raise BadInput.

    `downloading` is for the downloader's own check, made before it removes its in-progress marker.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise BadInput(f"model directory {directory} does not exist or is not a directory")
    directory = directory.resolve()
    if (not downloading and (directory / IN_PROGRESS).exists()) or any(directory.rglob("*.incomplete")):
        raise BadInput(f"{directory} holds an unfinished download; run `xrerank download` again to resume it")
    config = _read_config(directory)
    architectures = config.get("architectures") or []
    architecture = next((a for a in architectures if a.endswith("ForSequenceClassification")), None)
    if architecture is None:
        raise BadInput(
            f"{directory / 'config.json'}: architectures {architectures} has no "
            "*ForSequenceClassification entry; this is not a cross-encoder"
        )
    labels = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)
    if labels != 1:
        raise BadInput(f"{directory / 'config.json'}: the model has {labels} labels; a reranker has exactly 1")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise BadInput(f"{directory} has no tokenizer (looked for {', '.join(TOKENIZER_FILES)})")
    _check_weights(directory)
    model_type = str(config.get("model_type", ""))
    positions = config.get("max_position_embeddings")
    limit = positions - POSITION_OFFSET_MODEL_TYPES.get(model_type, 0) if isinstance(positions, int) else None
    return CrossEncoderDir(
        path=directory,
        architecture=architecture,
        model_type=model_type,
        max_tokens_limit=limit,
    )


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
            shards = set(json.loads(index_path.read_text(encoding="utf-8")).get("weight_map", {}).values())
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


def write_manifest(directory: Path, source: dict) -> dict:
    """Hash every file and write the manifest last, atomically: from then on the directory is complete."""
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, IN_PROGRESS)
    }
    manifest = {"version": 1, **source, "files": files}
    write_json_atomically(directory / MANIFEST, manifest)
    (directory / IN_PROGRESS).unlink(missing_ok=True)
    return manifest


def read_complete_manifest(directory: Path) -> dict | None:
    """The manifest if the directory is complete (every listed file there with its size), else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (directory / IN_PROGRESS).exists():
        return None
    for name, entry in manifest.get("files", {}).items():
        file_path = directory / name
        if not file_path.is_file() or file_path.stat().st_size != entry.get("size"):
            return None
    return manifest


def write_json_atomically(path: Path, document: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
