"""Does a deployed reranker answer correctly? Two suites, a report per check and per case.

mechanics: for any model, the contract of /v1/rerank and, when the weights are readable here,
           equality with the in-process CrossEncoder on the same pairs.
quality:   for real weights, golden cases where the relevant passage must outrank a keyword trap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .client import Reranker
from .errors import BadInput

SCORE_TOLERANCE = 1e-5  # batch padding and float32 rounding, measured at ~1e-7
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
    model_dir: Path | None,
    max_tokens: int | None,
    demo: bool,
    cases_file: Path | None = None,
) -> Report:
    report = Report(suite)
    if suite in ("mechanics", "all"):
        mechanics(reranker, report, replicas, model_dir, max_tokens)
    if suite in ("quality", "all"):
        quality(reranker, report, load_cases(cases_file), demo)
    return report


def mechanics(
    reranker: Reranker, report: Report, replicas: int, model_dir: Path | None, max_tokens: int | None
) -> None:
    results = reranker.rerank(_PROBE_QUERY, _PROBE_DOCUMENTS)
    scores = [r.score for r in results]
    report.add("sorted", scores == sorted(scores, reverse=True), f"{len(scores)} scores, best first")
    indexes = sorted(r.index for r in results)
    mapped = all(_PROBE_DOCUMENTS[r.index] == r.document for r in results)
    report.add(
        "indexes",
        indexes == list(range(len(_PROBE_DOCUMENTS))) and mapped,
        f"indexes {indexes} map back to the {len(_PROBE_DOCUMENTS)} inputs",
    )
    report.add(
        "score-range",
        all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores),
        f"scores in [{min(scores):.4f}, {max(scores):.4f}], finite, within [0, 1]",
    )
    top = reranker.rerank(_PROBE_QUERY, _PROBE_DOCUMENTS, top_n=2)
    report.add(
        "top-n",
        [r.index for r in top] == [r.index for r in results[:2]],
        f"top_n=2 gave {len(top)} results, the first two of the full ranking",
    )
    empty = reranker.rerank(_PROBE_QUERY, [])
    report.add("empty-list", empty == [], "no documents gives no results")
    long_document = " ".join(["relevance"] * (2 * (max_tokens or 512)))
    long_result = reranker.rerank(_PROBE_QUERY, [long_document, "short"])
    report.add(
        "over-long-document",
        len(long_result) == 2 and all(math.isfinite(r.score) for r in long_result),
        f"a document of {2 * (max_tokens or 512)} words was truncated and scored",
    )
    _every_replica_answers(reranker, report, replicas)
    if model_dir is not None:
        _matches_in_process(results, report, model_dir, max_tokens)


def _every_replica_answers(reranker: Reranker, report: Report, replicas: int) -> None:
    # The supervisor hands requests to replicas in turn; with retries off, a replica that
    # cannot answer shows up as a failure among 2 x replicas consecutive requests.
    requests_sent = 2 * replicas
    failures = []
    with reranker.without_retries() as strict:
        for _ in range(requests_sent):
            try:
                strict.rerank(_PROBE_QUERY, _PROBE_DOCUMENTS[:2])
            except Exception as exc:  # noqa: BLE001 - every failure is reported, whatever its kind
                failures.append(str(exc))
    detail = f"{requests_sent - len(failures)}/{requests_sent} requests answered across {replicas} replica(s)"
    report.add("every-replica", not failures, detail + (f"; first failure: {failures[0]}" if failures else ""))


def _matches_in_process(results: list, report: Report, model_dir: Path, max_tokens: int | None) -> None:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(model_dir), device="cpu", max_length=max_tokens)
    expected = model.predict([(_PROBE_QUERY, doc) for doc in _PROBE_DOCUMENTS])
    served = {r.index: r.score for r in results}
    worst = max(abs(served[i] - float(expected[i])) for i in range(len(_PROBE_DOCUMENTS)))
    report.add(
        "matches-in-process",
        worst <= SCORE_TOLERANCE,
        f"max |served - CrossEncoder.predict| = {worst:.2e} (tolerance {SCORE_TOLERANCE:g})",
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

    source = path or Path(__file__).with_name("cases") / "quality.yaml"
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
