"""Reranker families: how to recognise each from its config.json, what Xinference 4.1 must be told
about it, and how it scores a pair in process (the reference `verify` compares served scores with).

Xinference 4.1 picks a custom rerank model's scoring path by the registration's `type` and by
substrings of its name (xinference/model/rerank/sentence_transformers/core.py): a name containing
`qwen3`, `jina-reranker-v3` or `r3-rerank` (in any case) takes the Qwen3-Reranker prompt path,
whatever the model; `type: normal` with none of them takes sentence-transformers' CrossEncoder;
`LLM-based` takes FlagEmbedding. A model sent down the wrong path loads without an error and
scores nonsense, so the family decides the type and the name rule, both ways.

One module per family, each defining FAMILY; `FAMILIES` lists them in the order they are tried.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xrerank.errors import BadInput

# Substrings of a registered name that route any model down Xinference 4.1's Qwen3-Reranker path.
QWEN3_TRIGGERS = ("qwen3", "jina-reranker-v3", "r3-rerank")


def _other_path(model_name: str) -> str | None:
    """The path of Xinference 4.1's that a name sends any model down before the family's own, if any."""
    lowered = model_name.lower()
    if model_name.startswith("Qwen3-VL-Reranker"):
        return "Qwen3-VL-Reranker path (a name starting with Qwen3-VL-Reranker)"
    if lowered == "jina-reranker-m0":
        return "jina-reranker-m0 path"
    if "jina-reranker-v3.5" in lowered:
        return "jina-reranker-v3.5 path"
    if "minicpm-reranker" in lowered:
        return "minicpm-reranker path ('Query: ' put before every query)"
    return None


_MODULES = ("remote_code", "qwen3", "llm_based", "xlm_roberta", "bert", "modernbert", "deberta_v2")


@dataclass(frozen=True)
class Pair:
    query: str
    document: str


class Family:
    """One kind of reranker. Subclasses set the attributes and implement `recognises` and `scores`."""

    name: str = ""  # short, for files and flags: "xlm-roberta"
    title: str = ""  # for people: "XLM-RoBERTa cross-encoder"
    examples: tuple[str, ...] = ()  # model ids of this family
    route: str = ""  # the path Xinference 4.1 scores it by, for people
    xinference_type: str = "normal"  # the registration's `type`
    qwen3_name: bool = False  # the registered name must contain "qwen3"; else it must contain no trigger
    server_packages: tuple[str, ...] = ("sentence_transformers",)  # what the server's Python needs
    runs_repository_code: bool = False  # the repository's own .py files run on the server
    batch_pairs: int = 32  # pairs per forward pass on the server, for the memory estimate
    min_tokens: int = 1  # the smallest max_tokens the server's scoring path works with
    server_extra: str | None = None  # xrerank's extra that installs `server_packages`, if one does
    demo_id: str | None = None  # the demo weights' model_id, for families that can be made offline

    def recognises(self, config: dict) -> bool:
        raise NotImplementedError

    def check(self, config: dict, where: Path) -> None:
        """Refuse (BadInput) a directory of this family that cannot serve as a reranker."""

    def token_limit(self, config: dict) -> int | None:
        positions = config.get("max_position_embeddings")
        return positions if isinstance(positions, int) else None

    def scores(self, model_dir: Path, pairs: Sequence[Pair], max_tokens: int | None, device: str,
               dtype: str | None) -> list[float]:  # fmt: skip
        """The scores Xinference 4.1 computes for `pairs`, computed here the same way."""
        raise NotImplementedError

    def demo_code_files(self, directory: Path) -> list[str]:
        """The code files the demo of this family, generated into `directory`, runs on the server."""
        return []

    def write_tiny_model(self, directory: Path, seed: int) -> None:
        """A tiny random-weight model of this family, written into `directory` (demos and tests)."""
        raise BadInput(f"no offline demo exists for the {self.title} family")

    def parameters(self, config: dict) -> int:
        """The parameter count from config.json, when no safetensors header gives the exact one."""
        hidden = config["hidden_size"]
        intermediate = config.get("intermediate_size", 4 * hidden)
        embeddings = (
            config["vocab_size"] + config.get("max_position_embeddings", 512) + config.get("type_vocab_size", 1)
        ) * hidden + 2 * hidden
        layer = 4 * hidden * hidden + 4 * hidden + 2 * hidden * intermediate + intermediate + hidden + 4 * hidden
        head = hidden * hidden + hidden + hidden + 1
        return embeddings + config["num_hidden_layers"] * layer + head

    def name_problem(self, model_name: str) -> str | None:
        """Why Xinference 4.1 would score this family wrongly under `model_name`, with a name that works."""
        lowered = model_name.lower()
        found = [t for t in QWEN3_TRIGGERS if t in lowered]
        other = _other_path(model_name)
        if other:
            return (
                f"model name {model_name!r} sends any model down Xinference 4.1's {other}, not the {self.title}'s; "
                f"choose another name, e.g. {'Qwen3-Reranker-custom' if self.qwen3_name else 'custom-reranker'}"
            )
        if self.qwen3_name and "qwen3" not in lowered:
            return (
                f"model name {model_name!r} sends this {self.title} down Xinference 4.1's CrossEncoder path, "
                f"which loads it with a random score head (meaningless scores, no error): the name must "
                f"contain 'qwen3', e.g. Qwen3-Reranker-{model_name}"
            )
        if not self.qwen3_name and found:
            offered = model_name
            while any(t in offered.lower() for t in QWEN3_TRIGGERS):
                offered = _without(offered, next(t for t in QWEN3_TRIGGERS if t in offered.lower()))
            return (
                f"model name {model_name!r} contains {found[0]!r}, which sends any model down Xinference 4.1's "
                f"Qwen3-Reranker path; this is a {self.title}: choose a name without it, e.g. {offered}"
            )
        return None


def decoder_parameters(config: dict, qk_norm: bool = False) -> int:
    """A decoder's parameters from its config: grouped-query attention, a gated MLP, RMS norms, and
    the embeddings (twice when the output layer is not tied to them)."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim", hidden // heads)
    intermediate = config.get("intermediate_size", 4 * hidden)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2 + (2 * head_dim if qk_norm else 0)
    layer = attention + 3 * hidden * intermediate + 2 * hidden
    embeddings = config["vocab_size"] * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return embeddings + layers * layer + hidden


def _without(name: str, trigger: str) -> str:
    start = name.lower().index(trigger)
    rest = (name[:start] + name[start + len(trigger) :]).strip("-_") or "reranker"
    return rest.replace("--", "-")


def families() -> list[Family]:
    return [importlib.import_module(f"{__name__}.{module}").FAMILY for module in _MODULES]


def by_name(name: str) -> Family:
    for family in families():
        if family.name == name:
            return family
    raise BadInput(f"unknown reranker family {name!r}; known: {', '.join(f.name for f in families())}")


def demo_families() -> list[Family]:
    return [family for family in families() if family.demo_id]


def by_demo_id(model_id: str) -> Family | None:
    return next((family for family in demo_families() if family.demo_id == model_id), None)


def recognise(config: dict) -> Family | None:
    """The family of a config.json, or None; `detect` is the strict form that refuses."""
    return next((family for family in families() if family.recognises(config)), None)


def detect(config: dict, where: Path) -> Family:
    """The family of the model whose config.json is `config`, or BadInput naming what was found."""
    for family in families():
        if family.recognises(config):
            family.check(config, where)
            positions = config.get("max_position_embeddings")
            if positions is not None and (
                not isinstance(positions, int) or isinstance(positions, bool) or positions < 1
            ):
                raise BadInput(
                    f"{where / 'config.json'}: max_position_embeddings {positions!r} is not a positive number"
                )
            return family
    found = f"architectures {config.get('architectures') or []}, model_type {config.get('model_type')!r}"
    raise BadInput(
        f"{where / 'config.json'}: {found} is not a reranker family xrerank knows "
        f"({', '.join(f.title for f in families())}); see docs/families.md"
    )


def _check_positions(config: dict, where: Path) -> None:
    positions = config.get("max_position_embeddings")
    if positions is None or (isinstance(positions, int) and not isinstance(positions, bool) and positions > 0):
        return
    raise BadInput(f"{where / 'config.json'}: max_position_embeddings {positions!r} is not a positive number")


def check_name(family: Family, model_name: str) -> None:
    problem = family.name_problem(model_name)
    if problem:
        raise BadInput(problem)


def model_type(config: dict) -> str:
    found = config.get("model_type")
    return found if isinstance(found, str) else ""


def architectures(config: dict) -> list[str]:
    found = config.get("architectures") or []
    return [a for a in found if isinstance(a, str)] if isinstance(found, list) else []
