"""The custom rerank model JSON that Xinference 4.1 accepts. Pure data: no network, no disk.

4.1 validates registrations as `CustomRerankModelFamilyV2`: `version: 2` and a `model_specs` list.
The flat `model_id`/`model_uri` form found in older guides is rejected with
"model_specs field required".
"""

from __future__ import annotations

from pathlib import Path

from xrerank.errors import BadInput
from xrerank.families import Family, check_name
from xrerank.families.remote_code import code_files
from xrerank.names import validate_model_name
from xrerank.weights.modeldir import ModelDir

DEFAULT_LANGUAGES = ("en", "zh", "multilingual")
# The keys we set, and so the keys on which two specs of one name can differ.
_COMPARED_TOP_KEYS = ("model_name", "type", "language", "max_tokens")
_COMPARED_SPEC_KEYS = ("model_format", "model_uri", "model_id", "quantization")


def build_spec(
    model: ModelDir,
    model_name: str,
    languages: tuple[str, ...] | list[str] = DEFAULT_LANGUAGES,
    max_tokens: int | None = None,
    model_id: str | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """The registration for `model`: its family's `type`, after checking the name against the
    family's routing rule, the token limit, and the opt-in for a repository's own code."""
    validate_model_name(model_name)
    check_registration(model.family, model_name, trust_remote_code, code_files(model.config, model.path), model.path)
    if not languages:
        raise BadInput("at least one language is needed, e.g. --language en")
    if max_tokens is not None:
        if max_tokens < 1:
            raise BadInput(f"max_tokens must be at least 1, got {max_tokens}")
        if model.max_tokens_limit is not None and max_tokens > model.max_tokens_limit:
            raise BadInput(
                f"max_tokens {max_tokens} exceeds what {model.path} can take "
                f"({model.max_tokens_limit}, from max_position_embeddings in config.json)"
            )
    tokens = max_tokens if max_tokens is not None else model.max_tokens_limit
    if model.family.min_tokens > 1 and (tokens is None or tokens < model.family.min_tokens):
        raise BadInput(f"a {model.family.title} needs max_tokens of at least {model.family.min_tokens}")
    return {
        "version": 2,
        "model_name": model_name,
        "type": model.family.xinference_type,
        "language": list(languages),
        "max_tokens": tokens,
        "model_specs": [
            {
                "model_format": "pytorch",
                # "huggingface" on purpose: match_rerank drops other hubs when the server
                # runs with XINFERENCE_MODEL_SRC=huggingface, and model_uri makes the hub moot.
                "model_hub": "huggingface",
                "model_id": model_id,
                "model_uri": str(model.path),
                "quantization": "none",
            }
        ],
    }


def check_registration(family: Family, model_name: str, trust_remote_code: bool, code: list[str], where: Path) -> None:
    """The family's name rule, and the opt-in for a model whose repository's code runs on the server."""
    check_name(family, model_name)
    if family.runs_repository_code and not trust_remote_code:
        raise BadInput(
            f"{where} runs its own code on the server ({', '.join(code)}); Xinference 4.1 loads it only from a "
            "server started with XINFERENCE_TRUST_REMOTE_CODE=1: to accept that, set "
            "registration.trust_remote_code: true in the deployment file (or --trust-remote-code)"
        )


def spec_differences(registered: dict, wanted: dict) -> list[str]:
    """Human-readable differences between the server's copy of a spec and ours, on the keys we set."""
    differences = []
    for key in _COMPARED_TOP_KEYS:
        if registered.get(key) != wanted.get(key):
            differences.append(f"{key}: registered {registered.get(key)!r}, wanted {wanted.get(key)!r}")
    registered_spec = (registered.get("model_specs") or [{}])[0]
    wanted_spec = wanted["model_specs"][0]
    for key in _COMPARED_SPEC_KEYS:
        have = _normalise_uri(registered_spec.get(key)) if key == "model_uri" else registered_spec.get(key)
        if have != wanted_spec.get(key):
            differences.append(f"model_specs[0].{key}: registered {have!r}, wanted {wanted_spec.get(key)!r}")
    return differences


def _normalise_uri(uri: object) -> object:
    if isinstance(uri, str) and uri.startswith("file://"):
        return uri[len("file://") :]
    return uri


def check_spec_document(document: object, where: str) -> str:
    """A spec file's content in the shape Xinference 4.1 takes; returns its model_uri (a path)."""
    specs = document.get("model_specs") if isinstance(document, dict) else None
    if not isinstance(specs, list) or not specs or not isinstance(specs[0], dict):
        raise BadInput(
            f"{where} has no model_specs: Xinference 4.1 rejects the flat model_id/model_uri form; "
            "generate the file with `xrerank spec`"
        )
    validate_model_name(document.get("model_name"))
    uri = str(specs[0].get("model_uri") or "").removeprefix("file://")
    if not uri.startswith("/"):
        raise BadInput(f"{where}: model_uri {uri!r} must be an absolute path on the server's machine")
    return uri
