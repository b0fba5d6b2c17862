"""`xrerank bench` and `xrerank tune` against the real server, and the client's cache on real scores."""

import time

import pytest
from conftest import DEMO

pytestmark = pytest.mark.e2e
UID = "perf-reranker"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The demo deployment under its own name, one replica: what bench and tune are pointed at."""
    text = DEMO.read_text().replace("model_uid: demo-reranker", f"model_uid: {UID}").replace("replica: 2", "replica: 1")
    path = tmp_path_factory.mktemp("perf") / "perf.yaml"
    path.write_text(text.replace("model_name: demo-bge-reranker-v2-m3", "model_name: perf-bge-reranker"))
    return path


@pytest.fixture
def admin(admin, xinference, deployment, run):
    """conftest's, with this file's deployment running."""
    if xinference.admin().instance(UID) is None:
        result = run(*admin, "deploy", deployment)
        assert result.exit_code == 0, result.stderr
    return admin


def test_rerank_traffic_goes_out_with_an_api_key_and_admin_work_with_the_login(run, admin, deployment, xinference):
    """The server's own audit log says which credential each request carried."""
    since = time.time()
    assert run(*admin, "rerank", "--model-uid", UID, "What is AI?", "AI is ...", "Apples ...").exit_code == 0
    result, bench = run.json(*admin, "bench", deployment, "--duration", "1", "--warmup", "0", "--concurrency", "2")
    assert result.exit_code == 0 and bench["answered"] > 0, result.stderr
    assert run(*admin, "verify", deployment).exit_code == 0
    assert run(*admin, "status", "--model-uid", UID).exit_code == 0
    entries = xinference.audit(after=since)
    reranks = [e for e in entries if e["endpoint"] == "/v1/rerank"]
    assert len(reranks) > bench["requests"]  # rerank's, bench's and verify's, all of them below
    assert {(e["auth_type"], e["api_key_name"][:13]) for e in reranks} == {("api_key", "xrerank-data-")}
    admin_work = [e for e in entries if e["endpoint"] in ("/v1/cluster/info", "/v1/models/instances")]
    assert admin_work and {e["auth_type"] for e in admin_work} == {"jwt"}
    # one data-plane key for this user, created once and reused by every command since
    assert len({e["api_key_prefix"] for e in reranks}) == 1


def test_bench_excludes_its_warm_up(run, admin, deployment, xinference):
    since = time.time()
    args = ("--duration", "2", "--warmup", "2", "--concurrency", "2")
    result, answer = run.json(*admin, "bench", deployment, *args)
    assert result.exit_code == 0, result.stderr
    served = [e for e in xinference.audit(after=since) if e["endpoint"] == "/v1/rerank"]
    assert answer["workload"]["warmup"] == 2 and answer["elapsed_s"] < 4  # the window alone, not warm-up + window
    # Every request reached the server; those beyond the counted ones are the warm-up's, at least one
    # a caller. (Not a ratio to the counted ones: a fresh replica's first answers are the slow ones,
    # so the 2 s of warm-up once held 8 requests to the window's 16.)
    assert len(served) >= answer["requests"] + 2
    assert answer["sent_with_warmup"] == len(served)  # bench counts what it sent, warm-up included


def test_bench_reports_latency_and_throughput(run, admin, deployment):
    result, answer = run.json(*admin, "bench", deployment, "--duration", "2", "--concurrency", "2", "--docs", "8")
    assert result.exit_code == 0, result.stderr
    assert answer["model_uid"] == UID and answer["errors"] == 0 and answer["answered"] == answer["requests"] > 0
    latency = answer["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert answer["pairs_per_s"] == pytest.approx(answer["requests_per_s"] * 8, rel=0.01)
    assert "cache" not in answer


def test_bench_stops_at_the_request_count(run, admin, deployment):
    result, answer = run.json(*admin, "bench", deployment, "--duration", "60", "--max-requests", "5")
    assert result.exit_code == 0, result.stderr
    assert answer["requests"] == 5 and answer["elapsed_s"] < 30


def test_bench_answers_repeated_queries_from_the_cache(run, admin, deployment):
    args = ("--duration", "2", "--concurrency", "2", "--queries", "3", "--cache-size", "1000")
    result, answer = run.json(*admin, "bench", deployment, *args)
    assert result.exit_code == 0, result.stderr
    cache = answer["cache"]
    # 3 queries x 16 documents: 48 pairs to learn; two callers may both miss one before it is kept.
    assert cache["entries"] == 48 and cache["misses"] <= 2 * 48
    assert cache["hit_rate"] > 0.5 and cache["answered_from_cache"] > 0 and cache["hit_p50_ms"] is not None


def test_bench_counts_every_failure_and_exits_1(run, admin):
    result, answer = run.json(*admin, "bench", "--model-uid", "no-such-model", "--duration", "1", "--concurrency", "1")
    assert result.exit_code == 1
    assert answer["answered"] == 0 and answer["errors"] == answer["requests"] > 0
    assert any("no-such-model" in reason for reason in answer["error_reasons"])


def test_an_in_process_comparison_that_cannot_run_is_refused_before_any_load(run, admin, xinference):
    since = time.time()
    args = ("--model-uid", "no-such-model", "--in-process", "--duration", "30", "--warmup", "0")
    result = run(*admin, "bench", *args)
    assert result.exit_code == 1 and "not readable on this machine" in result.stderr
    assert not [e for e in xinference.audit(after=since) if e["endpoint"] == "/v1/rerank"]  # no load was sent


def test_cached_scores_are_the_servers_and_a_relaunch_is_a_new_identity(admin, xinference):
    from xrerank.client import Reranker
    from xrerank.client.cache import ScoreCache

    server = xinference.admin()
    documents = ["apple fruit", "apple phone company", "great wall"]
    cache = ScoreCache()
    with Reranker(server.endpoint, UID, credentials=server.api.credentials) as plain:
        expected = plain.rerank("apple company", documents)
    api_key = xinference.credentials["api_key"]  # a client's credential: rerank and list models only
    with Reranker(server.endpoint, UID, api_key=api_key, cache=cache) as cached:
        first = cached.rerank("apple company", documents)
        again = cached.rerank("apple company", documents, top_n=2)
        assert cached.revision.startswith("perf-bge-reranker@")
    assert [(r.index, r.document) for r in first] == [(r.index, r.document) for r in expected]
    assert [r.score for r in first] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert again == first[:2]
    assert (cache.stats().hits, cache.stats().misses) == (3, 3)


def test_tune_writes_the_best_settings_and_leaves_the_server_as_it_was(run, admin, deployment, xinference, tmp_path):
    before = sorted(m.uid for m in xinference.admin().models())
    # What a tune killed mid-trial leaves: its scratch instance running. The next tune removes it first.
    from xrerank.xinference.records import LaunchSettings

    leftover = LaunchSettings("perf-bge-reranker", f"{UID}-tune", device="cpu")
    xinference.admin().launch(leftover, threads=1)
    xinference.admin().wait_until_ready(leftover.uid, 1, time.monotonic() + 180)
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(deployment.read_text())
    args = ("--budget", "10", "--trial-duration", "1", "--warmup", "1", "--concurrency", "2")
    result, answer = run.json(*admin, "tune", tuned, *args)
    assert result.exit_code == 0, result.stderr
    assert len(answer["trials"]) == 1 and answer["not_tried"], "the budget allows the first trial only"
    trial = answer["trials"][0]
    assert trial["failure"] is None and trial["bench"]["errors"] == 0 and trial["bench"]["answered"] > 0
    cores = xinference.admin().workers()[0].cpu_count  # the first trial: 1 replica with every core
    assert answer["written"] and answer["best"]["threads_per_replica"] == cores
    assert sorted(m.uid for m in xinference.admin().models()) == before
    text = tuned.read_text()
    assert f"threads_per_replica: {cores}" in text and "# quality needs real weights" in text

    refused = run(*admin, "deploy", tuned)
    assert refused.exit_code == 1 and f"threads_per_replica: running None, wanted {cores}" in refused.stderr
    applied = run(*admin, "deploy", tuned, "--replace")
    assert applied.exit_code == 0, applied.stderr
    result, again = run.json(*admin, "deploy", tuned)
    assert result.exit_code == 0 and again["changed"] is False


def _keep(chart) -> None:
    """With XRERANK_CHARTS_DIR set, the charts the tests draw are kept there, to be looked at."""
    import os
    import shutil

    if os.environ.get("XRERANK_CHARTS_DIR"):
        shutil.copy(chart, os.environ["XRERANK_CHARTS_DIR"])


def test_bench_sweeps_callers_prints_a_table_and_draws_the_chart(run, admin, deployment, tmp_path):
    chart = tmp_path / "sweep.png"
    args = ("--sweep", "1,3", "--duration", "1.5", "--warmup", "0.5", "--docs", "8", "--doc-tokens", "8")
    result, answer = run.json(*admin, "bench", deployment, *args, "--chart", chart)
    assert result.exit_code == 0, result.stderr
    levels = answer["sweep"]
    assert [level["workload"]["concurrency"] for level in levels] == [1, 3]
    assert all(level["answered"] > 0 and level["errors"] == 0 for level in levels)
    assert answer["chart"] == str(chart) and chart.read_bytes().startswith(b"\x89PNG")
    _keep(chart)
    table = run(*admin, "bench", deployment, "--sweep", "2", "--duration", "1", "--warmup", "0")
    rows = [line.split() for line in table.stdout.splitlines() if line.strip().startswith("2 ")]
    assert table.exit_code == 0 and len(rows) == 1 and float(rows[0][2]) > 0  # callers, req/s, pairs/s, ...


@pytest.mark.parametrize("args, reason", [(("--sweep", "0,4"), "each from 1 to 256"),
                                          (("--sweep", "four"), "not a list of numbers"),
                                          (("--chart", "bench.txt"), ".png or .svg")])  # fmt: skip
def test_a_bad_sweep_or_chart_is_refused_before_any_load(run, admin, deployment, xinference, tmp_path, args, reason):
    since = time.time()
    result = run(*admin, "bench", deployment, *(str(tmp_path / a) if a.endswith(".txt") else a for a in args))
    assert result.exit_code == 2 and reason in result.stderr, result.stderr
    assert not [e for e in xinference.audit(after=since) if e["endpoint"] == "/v1/rerank"]


def test_tune_for_latency_at_one_caller_reports_its_objective_and_draws_its_trials(run, admin, deployment,
                                                                                   tmp_path):  # fmt: skip
    untouched, chart = tmp_path / "latency.yaml", tmp_path / "trials.png"
    untouched.write_text(deployment.read_text())
    args = ("--objective", "latency", "--concurrency", "1", "--budget", "10", "--trial-duration", "1", "--warmup",
            "0.5", "--no-write", "--chart", chart)  # fmt: skip
    result, answer = run.json(*admin, "tune", untouched, *args)
    assert result.exit_code == 0, result.stderr
    assert answer["objective"] == "latency" and answer["best"]["bench"]["latency_ms"]["p50"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG")
    _keep(chart)


def test_tune_with_no_write_leaves_the_file_alone(run, admin, deployment, tmp_path):
    untouched = tmp_path / "untouched.yaml"
    untouched.write_text(deployment.read_text())
    args = ("--budget", "10", "--trial-duration", "1", "--no-write")
    result, answer = run.json(*admin, "tune", untouched, *args)
    assert result.exit_code == 0, result.stderr
    assert answer["written"] is False and untouched.read_text() == deployment.read_text()
