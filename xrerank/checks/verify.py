"""Does a deployed reranker answer correctly? Two suites, a report per check and per case.

mechanics: for any model, the contract of /v1/rerank and, when the weights are readable here,
           every replica's scores against the in-process CrossEncoder on the same pairs.
quality:   for real weights, golden cases where the relevant passage must outrank a keyword trap.

The in-process reference is computed in the deployment's dtype on its device class when this
machine has one (fp16 served on CUDA equals fp16 in-process on CUDA exactly). Otherwise it is
fp32 on the CPU, and the tolerance follows from the served dtype's precision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xrerank.client import Reranker
from xrerank.errors import BadInput, require_server_side
from xrerank.families import Pair
from xrerank.weights.modeldir import inspect_model_dir

SCORE_TOLERANCE = 1e-5  # same dtype, same device class: batch padding and rounding, measured at ~1e-7
# Served in this dtype, compared with fp32: four units of the dtype's rounding (2^-11 for fp16,
# 2^-8 for bf16). fp16 on an H200 differed from fp32 on the CPU by 1.26e-4 for bge-reranker-v2-m3;
# a replica serving other weights differs by far more (0.1 and up).
DTYPE_TOLERANCE = {"float32": SCORE_TOLERANCE, "float16": 4 * 2**-11, "bfloat16": 4 * 2**-8}
DEFAULT_MARGIN = 0.1
_PROBE_QUERY = "What is the capital of France?"
_PROBE_DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Apples are rich in dietary fibre.",
    "Berlin is the capital of Germany.",
    "The Eiffel Tower stands in Paris.",
    "中国的首都是北京。",
    "hi",
]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Reference:
    """What the served scores are compared with: the weights on this machine, as the replicas run them."""

    model_dir: Path
    max_tokens: int | None = None
    dtype: str = "float32"  # the replicas' dtype
    on_gpu: bool = False  # the replicas run on CUDA


@dataclass
class Report:
    suite: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(Check(name, passed, detail))

    def as_dict(self) -> dict:
        return {"suite": self.suite, "passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def run_suites(
    reranker: Reranker,
    suite: str,
    replicas: int,
    reference: Reference | None,
    max_tokens: int | None,
    demo: bool,
    cases_file: Path | None = None,
) -> Report:
    report = Report(suite)
    if suite in ("mechanics", "all"):
        mechanics(reranker, report, replicas, reference, max_tokens)
    if suite in ("quality", "all"):
        quality(reranker, report, load_cases(cases_file), demo)
    return report


def mechanics(
    reranker: Reranker, report: Report, replicas: int, reference: Reference | None, max_tokens: int | None
) -> None:
    """The server's answers as sent (index, score, document), checked against the contract of /v1/rerank."""
    full = _attempt(lambda: _answer(reranker, _PROBE_DOCUMENTS))
    if isinstance(full, Exception):
        report.add("answers", False, f"the probe request failed: {_count(full)}")
        return
    scores = [score for _, score, _ in full]
    report.add("sorted", scores == sorted(scores, reverse=True), f"{len(scores)} scores, best first")
    indexes = sorted(index for index, _, _ in full)
    mapped = all(0 <= i < len(_PROBE_DOCUMENTS) and _PROBE_DOCUMENTS[i] == text for i, _, text in full)
    report.add(
        "indexes",
        indexes == list(range(len(_PROBE_DOCUMENTS))) and mapped,
        f"indexes {indexes} and their documents map back to the {len(_PROBE_DOCUMENTS)} inputs",
    )
    finite = [s for s in scores if math.isfinite(s)]
    report.add(
        "score-range",
        bool(scores) and len(finite) == len(scores) and all(0.0 <= s <= 1.0 for s in scores),
        f"scores in [{min(scores, default=math.nan):.4f}, {max(scores, default=math.nan):.4f}], "
        f"{len(scores) - len(finite)} not finite; wanted finite and within [0, 1]",
    )
    top = _attempt(lambda: _answer(reranker, _PROBE_DOCUMENTS, top_n=2))
    report.add(
        "top-n",
        isinstance(top, list) and [i for i, _, _ in top] == [i for i, _, _ in full[:2]],
        f"top_n=2 gave {_count(top)}; wanted the first two of the full ranking",
    )
    empty = _attempt(lambda: _answer(reranker, []))
    report.add("empty-list", empty == [], f"no documents gave {_count(empty)}; wanted no results and no error")
    words = 2 * (max_tokens or 512)
    long_result = _attempt(lambda: _answer(reranker, [" ".join(["relevance"] * words), "short"]))
    report.add(
        "over-long-document",
        isinstance(long_result, list)
        and sorted(i for i, _, _ in long_result) == [0, 1]
        and all(math.isfinite(s) for _, s, _ in long_result),
        f"a document of {words} words gave {_count(long_result)}; wanted it truncated and scored",
    )
    answers = _every_replica_answers(reranker, report, replicas)
    if reference is not None:
        _matches_in_process([full, *answers], report, reference)


def _answer(reranker: Reranker, documents: list[str], top_n: int | None = None) -> list[tuple[int, float, str | None]]:
    """(index, score, document text) as the server sent them, in its order."""
    answer = reranker.answer(_PROBE_QUERY, documents, top_n=top_n, return_documents=True)
    return [
        (int(item["index"]), float(item["relevance_score"]), (item.get("document") or {}).get("text"))
        for item in answer.get("results", [])
    ]


def _attempt(call):
    """The call's result, or the error it raised: a check reports either instead of aborting the suite."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - a failure of the call is the check's finding
        return exc


def _count(outcome: object) -> str:
    if isinstance(outcome, Exception):
        return f"an error ({str(outcome).splitlines()[0][:120]})"
    return f"{len(outcome)} result(s)" if isinstance(outcome, list) else repr(outcome)


def _every_replica_answers(reranker: Reranker, report: Report, replicas: int) -> list[list]:
    # The supervisor hands requests to replicas in turn; with retries off, a replica that
    # cannot answer shows up as a failure among 2 x replicas consecutive requests, and each
    # answer is kept, so the in-process comparison sees every replica's scores.
    requests_sent = 2 * replicas
    failures, answers = [], []
    with reranker.without_retries() as strict:
        for _ in range(requests_sent):
            try:
                answers.append(_answer(strict, _PROBE_DOCUMENTS))
            except Exception as exc:  # noqa: BLE001 - every failure is reported, whatever its kind
                failures.append(str(exc))
    detail = f"{requests_sent - len(failures)}/{requests_sent} requests answered across {replicas} replica(s)"
    report.add("every-replica", not failures, detail + (f"; first failure: {failures[0]}" if failures else ""))
    return answers


def reference_scores(reference: Reference, pairs: list[tuple[str, str]]) -> tuple[list[float], str, float]:
    """Scores of `pairs` in process, as the model's family scores them on the server (a CrossEncoder,
    the Qwen3 yes/no prompt, FlagEmbedding), how they were computed, and the tolerance that applies."""
    require_server_side("comparing the served scores with the model's own (the weights are on this machine)")
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # stderr is for xrerank's own lines
    model = inspect_model_dir(reference.model_dir)
    same = reference.on_gpu and torch.cuda.is_available()
    device = "cuda" if same else "cpu"
    dtype = reference.dtype if same else None
    scores = model.family.scores(model.path, [Pair(q, d) for q, d in pairs], reference.max_tokens, device, dtype)
    how = f"the {model.family.name} family's own scoring"
    if same or reference.dtype == "float32":
        return scores, f"{how}, {reference.dtype} on {device}", SCORE_TOLERANCE
    tolerance = DTYPE_TOLERANCE.get(reference.dtype, 1e-2)
    return scores, f"{how}, float32 on cpu for {reference.dtype} replicas", tolerance


def score_gap(answers: list[list[tuple]], expected: list[float]) -> tuple[float, int]:
    """The largest |served - expected| over all answers ((index, score, ...) each), and which holds it."""
    worst, where = 0.0, 0
    for number, answer in enumerate(answers):
        served = {index: score for index, score, _ in answer}
        gaps = [abs(served[i] - expected[i]) if i in served else math.inf for i in range(len(expected))]
        gap = max(gaps, default=0.0)
        if not math.isfinite(gap) or gap > worst:
            worst, where = gap, number
    return worst, where


def _matches_in_process(answers: list[list], report: Report, reference: Reference) -> None:
    expected, how, tolerance = reference_scores(reference, [(_PROBE_QUERY, doc) for doc in _PROBE_DOCUMENTS])
    worst, where = score_gap(answers, expected)
    report.add(
        "matches-in-process",
        worst <= tolerance,
        f"max |served - in-process| = {worst:.2e} over {len(answers)} answers "
        f"(worst: answer {where + 1}); reference {how}, tolerance {tolerance:.1e}",
    )


def quality(reranker: Reranker, report: Report, cases: list[dict], demo: bool) -> None:
    if demo:
        report.add("real-weights", False, "demo model: random weights cannot rank, so the quality suite cannot pass")
    for case in cases:
        documents = case["relevant"] + case["traps"]
        by_index = {r.index: r.score for r in reranker.rerank(case["query"], documents)}
        relevant = [by_index[i] for i in range(len(case["relevant"]))]
        traps = [by_index[i] for i in range(len(case["relevant"]), len(documents))]
        margin = case.get("margin", DEFAULT_MARGIN)
        gap = min(relevant) - max(traps)
        report.add(
            f"case:{case['name']}",
            gap >= margin,
            f"worst relevant {min(relevant):.3f} vs best trap {max(traps):.3f}: gap {gap:+.3f}, needs {margin:+.3f}",
        )


def load_cases(path: Path | None) -> list[dict]:
    """Golden cases from `path`, or the built-in ones; each has name, query, relevant, traps, margin."""
    import yaml

    source = path or Path(__file__).parent / "cases" / "quality.yaml"
    try:
        document = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot read cases file {source}: {str(exc).splitlines()[0]}") from None
    cases = document.get("cases") if isinstance(document, dict) else None
    if not isinstance(cases, list) or not cases:
        raise BadInput(f"{source}: expected a `cases:` list")
    for number, case in enumerate(cases, 1):
        missing = [k for k in ("name", "query", "relevant", "traps") if not isinstance(case, dict) or not case.get(k)]
        if missing:
            raise BadInput(f"{source}: case {number} lacks {', '.join(missing)}")
        if not all(isinstance(d, str) for d in case["relevant"] + case["traps"]):
            raise BadInput(f"{source}: case {case['name']}: relevant and traps are lists of strings")
    return cases
