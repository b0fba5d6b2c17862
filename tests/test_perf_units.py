"""The pure parts of the performance work: the score cache, the load loop, tune's choices and its file edit."""

import json
import re
import threading
import time
from collections import Counter

import pytest
from conftest import DEMO
from loopback import LoopbackServer, QuietHandler

from xrerank.client.cache import ScoreCache
from xrerank.client.http import Api
from xrerank.deploy.config import load_deployment
from xrerank.errors import BadInput
from xrerank.perf.bench import BenchResult, Workload, run_bench
from xrerank.perf.tune import Setting, candidates, write_best
from xrerank.xinference.records import check_launch_settings
from xrerank.xinference.server import LaunchSettings, launch_payload


def test_cache_keys_differ_by_model_query_and_document():
    keys = {
        *ScoreCache.keys("m@1", "q", ["a", "b"]),
        *ScoreCache.keys("m@2", "q", ["a"]),
        *ScoreCache.keys("m@1", "q2", ["a"]),
    }
    assert len(keys) == 4
    assert ScoreCache.keys("m@1", "q", ["a"]) == ScoreCache.keys("m@1", "q", ["a"])


def test_cache_is_bounded_and_drops_the_least_recently_used():
    cache = ScoreCache(max_entries=2)
    a, b, c = ScoreCache.keys("m", "q", ["a", "b", "c"])
    cache.put_many([a, b], [0.1, 0.2])
    assert cache.get_many([a]) == [0.1]  # a is now the most recently used
    cache.put_many([c], [0.3])
    assert cache.get_many([a, b, c]) == [0.1, None, 0.3]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (3, 1, 2)
    assert stats.hit_rate == pytest.approx(0.75)


def test_cache_tells_each_thread_whether_its_own_lookup_missed():
    cache = ScoreCache()
    known, unknown = ScoreCache.keys("m", "q", ["known", "unknown"])
    cache.put_many([known], [1.0])
    seen = {}

    def look_up(name, keys):
        cache.get_many(keys)
        time.sleep(0.05)  # the other thread looks up meanwhile
        seen[name] = cache.last_lookup_missed()

    threads = [threading.Thread(target=look_up, args=(n, k)) for n, k in (("hit", [known]), ("miss", [unknown]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"hit": 0, "miss": 1}


def test_percentiles_are_nearest_rank():
    result = BenchResult(Workload(), 1.0, latencies=[i / 1000 for i in range(1, 101)])
    assert [result.percentile(q) for q in (0.5, 0.95, 0.99)] == [0.05, 0.095, 0.099]
    assert BenchResult(Workload(), 1.0).percentile(0.5) is None


def test_the_load_loop_stops_at_the_request_count_and_counts_failures():
    calls = Counter()

    def rerank(query, documents):
        calls["all"] += 1
        if calls["all"] % 3 == 0:
            raise RuntimeError("boom\nsecond line")

    result = run_bench(rerank, Workload(docs=4, concurrency=3, duration=30, max_requests=30))
    assert calls["all"] == 30 and result.elapsed < 30
    assert result.answered == 20 and result.errors == Counter({"boom": 10})
    document = result.as_dict()
    assert document["requests"] == 30 and document["pairs_per_s"] == pytest.approx(document["requests_per_s"] * 4, 0.01)


def test_the_load_loop_stops_at_the_deadline_and_reports_progress():
    seen = []
    result = run_bench(lambda q, d: time.sleep(0.01), Workload(concurrency=2, duration=1.5), seen.append)
    assert 1.5 <= result.elapsed < 3 and result.answered > 10 and seen


def test_the_warm_up_is_excluded_from_the_figures():
    starts = []

    def rerank(query, documents):
        starts.append(time.perf_counter())
        time.sleep(0.05)

    begun = time.perf_counter()
    result = run_bench(rerank, Workload(concurrency=2, duration=1.0, warmup=1.0))
    measured_from = begun + 1.0
    counted = [start for start in starts if start >= measured_from]
    assert len(starts) > len(counted) >= result.answered > 0  # warm-up calls happened and were not counted
    assert result.answered >= len(counted) - 2  # each caller may have one call cut off by the deadline
    assert 0.9 <= result.elapsed < 1.9  # the measured window only, not warm-up + window (2 s)


def test_requests_slower_than_the_window_are_measured_not_lost():
    # CI once saw a tune trial report 0 pairs/s: every caller was still in its warm-up request
    # (a fresh replica's first answers are slow) when the 1 s window closed, so none was counted.
    result = run_bench(lambda q, d: time.sleep(0.4), Workload(concurrency=2, duration=0.1, warmup=0.25))
    assert result.answered == 2 and not result.errors  # one counted request per caller
    assert 0.5 <= result.elapsed < 0.9  # the window stretched to the end of those requests: ~0.55 s
    assert result.requests_per_second == pytest.approx(2 / result.elapsed)


def test_every_request_is_a_new_query_unless_queries_are_drawn_from_a_few():
    seen = []
    run_bench(lambda q, d: seen.append(q), Workload(concurrency=1, duration=30, max_requests=200))
    assert len(set(seen)) == len(seen) == 200
    seen.clear()
    run_bench(lambda q, d: seen.append(q), Workload(concurrency=1, duration=30, max_requests=200, queries=3))
    assert len(set(seen)) == 3


def test_repeated_queries_bring_the_same_documents():
    workload = Workload(docs=3, doc_tokens=5, queries=2)
    import random

    drawn = {workload.query(n, random.Random(n)) for n in range(20)}
    assert len(drawn) == 2
    assert all(len(doc.split()) == 5 for doc in workload.documents(0)) and len(workload.documents(0)) == 3


def test_tune_tries_the_deployments_own_setting_first_then_the_core_splits():
    tried = candidates(Setting(2, 1), cores=2)
    assert tried[0] == Setting(2, 1)
    assert Setting(1, 2) in tried and len(tried) == len(set(tried))
    assert all(s.replica * s.threads_per_replica <= 2 for s in tried)


def test_tune_on_gpus_tries_more_replicas_per_gpu_while_memory_allows_then_batching_and_request_size():
    own = Setting(2, None, gpus=(0, 1), replicas_per_gpu=1)
    tried = candidates(own, cores=None, gpus=(0, 1), max_per_gpu=5, docs=64)
    assert tried[0] == own and {s.threads_per_replica for s in tried} == {None}
    assert [(s.replica, s.replicas_per_gpu) for s in tried if s.batch_size is None and not s.chunk_size] == [
        (2, 1), (4, 2), (8, 4)
    ]  # fmt: skip
    assert {(s.batch_size, s.batch_interval) for s in tried} >= {(64, 0.01), (128, 0.01)}
    assert {s.chunk_size for s in tried} >= {16, 32}
    only_one = candidates(own, cores=None, gpus=(0, 1), max_per_gpu=1, docs=16)
    assert max(s.replicas_per_gpu for s in only_one) == 1 and not any(s.chunk_size for s in only_one)


def test_a_gpu_setting_launches_its_replicas_on_repeated_indexes():
    setting = Setting(4, None, gpus=(0, 1), replicas_per_gpu=2)
    launch = setting.launch(LaunchSettings("m", "m", replica=2, gpu_idx=(0, 1), use_fp16=True), "m-tune")
    assert (launch.model_uid, launch.replica, launch.gpu_idx, launch.use_fp16) == ("m-tune", 4, (0, 0, 1, 1), True)
    assert launch.replicas_per_gpu() == {0: 2, 1: 2}


def test_the_best_gpu_setting_is_written_as_gpus_and_replicas_per_gpu(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(DEMO.parent.joinpath("bge-reranker-v2-m3-gpu.yaml").read_text())
    write_best(path, Setting(4, None, 128, 0.01, gpus=(0, 1), replicas_per_gpu=2, chunk_size=32))
    launch = load_deployment(path)[0].launch
    assert (launch.gpu_idx, launch.replicas_per_gpu, launch.replica) == ([0, 1], 2, 4)
    assert (launch.batch_size, launch.batch_interval, launch.use_fp16) == (128, 0.01, True)
    assert "chunk_size" not in path.read_text()  # a client setting: tune prints it


def test_a_gpu_setting_written_over_a_gpu_count_replaces_it_and_the_file_still_deploys(tmp_path):
    path = tmp_path / "gpu.yaml"
    text = DEMO.parent.joinpath("bge-reranker-v2-m3-gpu.yaml").read_text()
    path.write_text(re.sub(r"(?m)^  gpu_idx: .*$", "  n_gpu: 1", text))
    assert load_deployment(path)[0].launch.n_gpu == 1
    write_best(path, Setting(2, None, gpus=(0, 1), replicas_per_gpu=1))
    launch = load_deployment(path)[0].launch
    assert (launch.gpu_idx, launch.n_gpu, launch.replica) == ([0, 1], None, 2)


def test_the_best_setting_is_written_with_the_comments_kept(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO.read_text())
    write_best(path, Setting(1, 2, batch_size=64, batch_interval=0.01))
    text = path.read_text()
    assert "# each replica gets cores / replicas threads" in text and text.startswith("# The offline demo")
    launch = load_deployment(path)[0].launch
    assert (launch.replica, launch.threads_per_replica, launch.batch_size, launch.batch_interval) == (1, 2, 64, 0.01)
    write_best(path, Setting(1, 2))
    launch = load_deployment(path)[0].launch
    assert (launch.batch_size, launch.batch_interval) == (None, None)


def test_a_file_that_would_not_load_is_not_written(tmp_path):
    path = tmp_path / "demo.yaml"
    original = DEMO.read_text().replace("version: 1", "version: 1\nunknown_key: 1")
    path.write_text(original)
    with pytest.raises(BadInput, match="unknown_key"):
        write_best(path, Setting(1, 2))
    assert path.read_text() == original and list(tmp_path.iterdir()) == [path]


def test_batch_settings_reach_the_launch_and_bad_ones_are_refused():
    payload = launch_payload(LaunchSettings("m", batch_size=64, batch_interval=0.0), threads=1)
    assert (payload["batch_size"], payload["batch_interval"], payload["envs"]["OMP_NUM_THREADS"]) == (64, 0.0, "1")
    assert "batch_size" not in launch_payload(LaunchSettings("m"), threads=None)
    with pytest.raises(BadInput, match="batch interval"):
        check_launch_settings(LaunchSettings("m", batch_interval=-1))


def test_connections_are_kept_alive_only_through_https():
    assert Api("http://127.0.0.1:9997").keep_alive is False
    assert Api("https://rerank.example.com").keep_alive is True
    assert Api("http://127.0.0.1:9997", keep_alive=True).keep_alive is True


# --- bench's own sender, sweeps, charts, tune's objective ----------------------------------------


class _Rerank(QuietHandler):
    """Answers /v1/rerank as Xinference does, one result per document; records what it was sent."""

    seen: list = []
    status = 200
    drop_one = False

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, dict(self.headers), body))
        documents = body["documents"][: -1 if self.drop_one else None]
        results = [{"index": i, "relevance_score": 0.5, "document": None} for i in range(len(documents))]
        self.send_json(self.status, {"results": results} if self.status == 200 else {"detail": "refused"})


def test_bench_sends_one_request_per_call_with_the_key_and_checks_the_answer():
    from xrerank.perf.bench import BenchFailure, DirectSender

    _Rerank.seen = []
    with LoopbackServer(_Rerank) as server:
        send = DirectSender(server.url, "model-\u00e9", "xf-key", timeout=10)
        documents = ['a "quoted" text', "b\nnew line", "c \u4e2d"]
        send("query \u2603", documents)
        send("second", documents)  # the encoded documents are reused, the query is new
        path, headers, body = _Rerank.seen[0]
        assert path == "/v1/rerank" and headers["Authorization"] == "Bearer xf-key"
        assert headers["Connection"] == "close"  # Nagle on the server's side: a connection per request
        assert body == {"model": "model-\u00e9", "query": "query \u2603", "documents": documents}
        assert _Rerank.seen[1][2]["query"] == "second"
        _Rerank.drop_one = True
        with pytest.raises(BenchFailure, match="answered 2 of 3 documents"):
            send("q", documents)
        _Rerank.drop_one, _Rerank.status = False, 401
        with pytest.raises(BenchFailure) as refused:
            send("q", documents)
        assert refused.value.status == 401 and "HTTP 401" in str(refused.value)
    _Rerank.status = 200
    with pytest.raises(BenchFailure, match="connection failed"):
        DirectSender(server.url, "m", None, timeout=2)("q", ["a"])  # the server is gone


def _result(callers: int, p50_ms: float, rate: float) -> BenchResult:
    latencies = [p50_ms / 1000] * 9 + [2 * p50_ms / 1000]
    return BenchResult(Workload(docs=16, concurrency=callers), len(latencies) / rate, latencies=latencies)


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_a_sweep_and_tune_trials_are_drawn_to_png_and_svg(tmp_path, suffix, magic):
    from xrerank.perf.chart import check_chart_path, sweep_chart, tune_chart
    from xrerank.perf.tune import Trial, Tuning

    sweep = [_result(1, 30, 30), _result(4, 70, 55), _result(16, 250, 60), _result(48, 1000, 48)]
    path = sweep_chart(sweep, check_chart_path(tmp_path / f"sweep{suffix}"), "demo")
    assert path.read_bytes().startswith(magic) and path.stat().st_size > 5000
    trials = [Trial(Setting(1, 2), sweep[0]), Trial(Setting(2, 1), sweep[1]), Trial(Setting(2, 1, 64, 0.01))]
    trials[2].failure = "boom"
    drawn = tune_chart(Tuning(trials, trials[1], [], Workload()), tmp_path / f"tune{suffix}", "tune")
    assert drawn.read_bytes().startswith(magic)


@pytest.mark.parametrize("name, reason", [("chart.txt", ".png or .svg"), ("missing/chart.png", "does not exist")])
def test_a_chart_path_that_cannot_be_written_is_refused(tmp_path, name, reason):
    from xrerank.perf.chart import check_chart_path

    with pytest.raises(BadInput, match=reason):
        check_chart_path(tmp_path / name)


def test_tune_for_latency_picks_the_lowest_p50_and_tries_spreading_a_request_over_replicas():
    from xrerank.perf.tune import Trial, best_of

    fast = Trial(Setting(2, 1, chunk_size=8), _result(1, 20, 40))
    busy = Trial(Setting(1, 2), _result(1, 30, 60))
    broken = Trial(Setting(2, 1))
    assert best_of([fast, busy, broken], "latency") is fast
    assert best_of([fast, busy, broken], "throughput") is busy
    tried = candidates(Setting(2, 1), cores=2, docs=16, objective="latency")
    assert Setting(2, 1, chunk_size=8) in tried and tried[0] == Setting(2, 1)
    assert not any(setting.chunk_size for setting in candidates(Setting(2, 1), cores=2, docs=16))
