"""`xrerank verify` shown failing: a real Xinference behind a proxy that breaks one promise at a time.

Also fp16: replicas that really run in half precision pass against the fp32 reference with the
tolerance fp16 implies, and fail against a replica serving other weights.
"""

from __future__ import annotations

import time

import pytest
from misbehave import MisbehavingProxy

pytestmark = pytest.mark.e2e
UID, OTHER, FP16 = "verify-demo", "verify-other", "verify-fp16"


@pytest.fixture(scope="module")
def models(xinference, tmp_path_factory):
    """The demo weights under UID (fp32) and FP16 (fp16, on the CPU), other weights under OTHER."""
    from xrerank.deploy.engine import register_model
    from xrerank.deploy.spec import build_spec
    from xrerank.weights.generated import DEMO_CONFIG, make_demo_model, make_random_model
    from xrerank.weights.modeldir import inspect_model_dir
    from xrerank.xinference.records import LaunchSettings

    root = tmp_path_factory.mktemp("verify")
    demo = make_demo_model(root / "demo")
    other = make_random_model(root / "other", DEMO_CONFIG, "xrerank/other", seed=1)
    server = xinference.admin()
    launches = {
        UID: LaunchSettings("verify-demo-x", UID, device="cpu"),
        OTHER: LaunchSettings("verify-other-x", OTHER, device="cpu"),
        # xrerank refuses fp16 on CPU (6x slower), so this one goes to the server directly.
        FP16: LaunchSettings("verify-demo-x", FP16, device="cpu", use_fp16=True),
    }
    for name, directory in (("verify-demo-x", demo), ("verify-other-x", other)):
        register_model(server, build_spec(inspect_model_dir(directory), name, max_tokens=512), persist=False)
    for uid, settings in launches.items():
        server.launch(settings, threads=1)
        server.wait_until_ready(uid, 1, time.monotonic() + 240)
    yield {"demo": demo}
    for uid in launches:
        server.terminate(uid)


@pytest.fixture(scope="module")
def proxy(xinference, models):
    with MisbehavingProxy(xinference.endpoint) as proxy:
        yield proxy


def _verify(run, xinference, endpoint: str, uid: str, *more: str):
    credentials = xinference.credentials
    return run.json("--endpoint", endpoint, "--username", credentials["username"], "--password",
                    credentials["password"], "verify", "--model-uid", uid, *more)  # fmt: skip


def test_the_proxy_itself_changes_nothing(run, xinference, proxy):
    proxy.fault = "none"
    result, report = _verify(run, xinference, proxy.url, UID, "--suite", "mechanics")
    assert result.exit_code == 0, report
    assert {c["name"] for c in report["checks"]} >= {"sorted", "indexes", "score-range", "matches-in-process"}


@pytest.mark.parametrize(
    "fault, check",
    [
        ("unsorted", "sorted"),
        ("index-off-by-one", "indexes"),
        ("score-above-one", "score-range"),
        ("nan", "score-range"),
        ("top-n-ignored", "top-n"),
        ("empty-list-error", "empty-list"),
        ("long-document-error", "over-long-document"),
        ("every-other-from", "matches-in-process"),
    ],
)
def test_each_broken_promise_fails_verify_and_names_the_check(run, xinference, proxy, fault, check):
    proxy.fault, proxy.other_uid = fault, OTHER
    try:
        result, report = _verify(run, xinference, proxy.url, UID, "--suite", "mechanics")
    finally:
        proxy.fault = "none"
    assert result.exit_code == 1
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert check in failed, report["checks"]


def test_fp16_replicas_pass_with_the_tolerance_fp16_implies(run, xinference):
    result, report = _verify(run, xinference, xinference.endpoint, FP16, "--suite", "mechanics", "--dtype", "float16")
    assert result.exit_code == 0, report
    check = next(c for c in report["checks"] if c["name"] == "matches-in-process")
    assert "float32 on cpu for float16 replicas, tolerance 2.0e-03" in check["detail"]
    # the same replicas held to fp32's tolerance: their half-precision rounding shows
    result, report = _verify(run, xinference, xinference.endpoint, FP16, "--suite", "mechanics", "--dtype", "float32")
    assert result.exit_code == 1
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["matches-in-process"]


def test_a_replica_serving_other_weights_still_fails_in_fp16(run, xinference, proxy):
    proxy.fault, proxy.other_uid = "every-other-from", OTHER
    try:
        result, report = _verify(run, xinference, proxy.url, FP16, "--suite", "mechanics", "--dtype", "float16")
    finally:
        proxy.fault = "none"
    assert result.exit_code == 1
    check = next(c for c in report["checks"] if c["name"] == "matches-in-process")
    assert not check["passed"] and "tolerance 2.0e-03" in check["detail"]


def test_the_quality_suite_fails_naming_the_case_whose_traps_the_weights_rank_first(run, xinference, models, proxy,
                                                                                    tmp_path):  # fmt: skip
    from sentence_transformers import CrossEncoder

    query = "What is the capital of France?"
    candidates = ["Paris is the capital of France.", "Apples are rich in fibre.", "Berlin is in Germany.",
                  "The Eiffel Tower stands in Paris.", "Great Wall dynasty", "python code performance"]  # fmt: skip
    scores = CrossEncoder(str(models["demo"]), device="cpu", max_length=512).predict([(query, d) for d in candidates])
    ranked = [doc for _, doc in sorted(zip(scores, candidates, strict=True), reverse=True)]
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        f"  - {{name: ranked-right, query: '{query}', relevant: ['{ranked[0]}'], traps: ['{ranked[-1]}'], margin: 0}}\n"
        f"  - {{name: traps-first, query: '{query}', relevant: ['{ranked[-1]}'], traps: ['{ranked[0]}'], margin: 0}}\n"
    )
    result, report = _verify(run, xinference, xinference.endpoint, UID, "--suite", "quality", "--cases", cases)
    outcome = {c["name"]: c["passed"] for c in report["checks"]}
    assert result.exit_code == 1 and outcome["case:ranked-right"] is True and outcome["case:traps-first"] is False
    proxy.fault = "inverted"  # the same weights, their ranking turned upside down on the way
    try:
        result, report = _verify(run, xinference, proxy.url, UID, "--suite", "quality", "--cases", cases)
    finally:
        proxy.fault = "none"
    outcome = {c["name"]: c["passed"] for c in report["checks"]}
    assert outcome["case:ranked-right"] is False and outcome["case:traps-first"] is True


@pytest.mark.parametrize("status", [502, 503, 504])
def test_the_client_retries_a_gateway_error_or_a_loading_replica_and_then_ranks(xinference, proxy, status):
    from xrerank.client import Reranker, RerankError

    key = xinference.credentials["api_key"]
    proxy.fault, proxy.failures, proxy.failure_status = "fail-first", 3, status
    try:
        with Reranker(proxy.url, UID, api_key=key, retry_for=10) as client:
            assert len(client.rerank("q", ["a", "b"])) == 2
        assert proxy.failures == 0  # the three failures were met and retried
        proxy.failures = 1
        with pytest.raises(RerankError) as raised, Reranker(proxy.url, UID, api_key=key, retry_for=0) as once:
            once.rerank("q", ["a", "b"])
        assert raised.value.status == status
    finally:
        proxy.fault = "none"
