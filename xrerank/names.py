"""What Xinference 4.1 accepts as a model name or a model uid, checked before anything is sent.

Names and uids end up in URL paths (/v1/models/{uid}), in the server's file names
(model/v2/rerank/{name}.json) and in xrerank's own (deployments/{uid}@...); a name that is legal
for one and not for another fails late and far from the cause.
"""

from __future__ import annotations

import re

from xrerank.errors import BadInput

# The rerank names Xinference 4.1.0 ships; registering one of them fails with "already registered".
BUILTIN_RERANK_NAMES = frozenset(
    {
        "Qwen3-Reranker-0.6B",
        "Qwen3-Reranker-4B",
        "Qwen3-Reranker-8B",
        "Qwen3-VL-Reranker-2B",
        "Qwen3-VL-Reranker-8B",
        "R3-rerank-0.6b",
        "bce-reranker-base_v1",
        "bge-reranker-base",
        "bge-reranker-large",
        "bge-reranker-v2-gemma",
        "bge-reranker-v2-m3",
        "bge-reranker-v2-minicpm-layerwise",
        "jina-reranker-m0",
        "jina-reranker-v2",
        "jina-reranker-v3.5",
        "jina-reranker-v3",
        "minicpm-reranker",
    }
)
MAX_LENGTH = 100  # the server writes {name}.json; file systems stop at 255 bytes
# Xinference's own rule for model names (model/utils.py): no URL-special characters, no spaces;
# we also refuse a leading '.' (hidden files, '..') and control characters.
_ALLOWED = re.compile(r"^[^+\\/?%#&=\s.\x00-\x1f\x7f][^+\\/?%#&=\s\x00-\x1f\x7f]*$")


def validate_model_name(name: str, builtin_ok: bool = False) -> str:
    """A legal name; one of Xinference's built-in names only with `builtin_ok` (it cannot be registered)."""
    _check("model name", name)
    if name in BUILTIN_RERANK_NAMES and not builtin_ok:
        raise BadInput(f"model name {name!r} is a built-in Xinference model; choose another, e.g. custom-{name}")
    return name


def validate_model_uid(uid: str) -> str:
    return _check("model uid", uid)


def _check(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"a {what} is required")
    shown = value if len(value) <= 40 else value[:37] + "..."
    if len(value) > MAX_LENGTH:
        raise BadInput(f"{what} {shown!r} is {len(value)} characters long; at most {MAX_LENGTH} are allowed")
    if not _ALLOWED.match(value):
        raise BadInput(
            f"{what} {shown!r} is not allowed: use letters, digits, '-', '_' or '.', no spaces, "
            "no leading '.', none of + \\ / ? % # & ="
        )
    return value
