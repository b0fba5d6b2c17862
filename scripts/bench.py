"""xrerank's performance, side by side in one run, as ratios.

    .venv/bin/python scripts/bench.py            # about 20 minutes on 2 cores
    .venv/bin/python scripts/bench.py --quick    # shorter runs, noisier figures

Starts its own xinference-local with auth on (Xinference 4.1's default, and what users run) in a
scratch XRERANK_HOME, and generates two random-weight models: the demo (2 layers, hidden 64) and
a base-size one (12 layers, hidden 768). Prints:
  1. client overhead: xrerank's client vs raw HTTP vs xinference-client, one caller;
  2. the data plane under concurrency (1 to 64 callers): a minimal raw-HTTP loader, xrerank's
     client, `xrerank bench` and a client on the admin's login token, all against the same
     deployment, in alternating rounds; and the in-process limit on the same documents;
  3. the limit: the served model vs in-process CrossEncoder, same machine, inputs and threads,
     for the demo (16 short documents) and the base-size model (256-token documents);
  4. replicas x threads per replica x Xinference's micro-batching, on CPU (xrerank tune's trials);
  5. the client's score cache on repeated queries;
  6. start-up: `xrerank --help` / `xrerank status` vs `xinference --help` / `xinference list`.
With a GPU, the in-process limits are measured on it, in fp16, at batch 32 and 128 (section 7).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VENV_BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Shorter measurements.")
    parser.add_argument("--callers", default="1,4,16,48,64", help="Caller counts for section 2.")
    parser.add_argument("--sections", default="1,2,3,4,5,6,7,8", help="Which sections to run, e.g. 8 or 1,2.")
    parser.add_argument("--words", default="8,64", help="Document lengths for section 8.")
    args = parser.parse_args()
    sections = {int(n) for n in args.sections.split(",")}
    seconds = 4.0 if args.quick else 10.0

    import torch
    from bench_memory import base_config, scratch_server

    from xrerank.deploy.engine import register_model
    from xrerank.deploy.spec import build_spec
    from xrerank.weights.generated import make_demo_model, make_random_model
    from xrerank.weights.modeldir import inspect_model_dir
    from xrerank.xinference import local

    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads in-process")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        models = {
            "bench-demo": make_demo_model(root / "demo"),
            "bench-base": make_random_model(root / "base", base_config(), "xrerank/random-base-12x768"),
        }
        session, credentials = scratch_server(root, auth=True)
        try:
            for uid, directory in models.items():
                register_model(session.server, build_spec(inspect_model_dir(directory), uid, max_tokens=512))
            report = Report()
            if 1 in sections:
                client_overhead(session, seconds, report)
            if 2 in sections:
                levels = [int(n) for n in args.callers.split(",")]
                concurrency(session, credentials, models["bench-demo"], cores, levels, seconds,
                            1 if args.quick else 3, report)  # fmt: skip
            if 3 in sections:
                served_vs_in_process(session, models, cores, seconds, report)
            if 4 in sections:
                configuration_matrix(session, cores, seconds)
            if 5 in sections:
                cache_hits(session, seconds, report)
            if 6 in sections:
                start_up(session, report)
            if 7 in sections:
                gpu_limits(models, seconds)
            if 8 in sections:
                levels = [int(n) for n in args.callers.split(",") if int(n) <= 48]
                words = [int(n) for n in args.words.split(",")]
                bench_own_cost(session, cores, levels, words, seconds * 0.6, 2 if args.quick else 3, report)
            report.targets()
        finally:
            local.stop(local.default_server_dir())


class Report:
    """Collects the figures the targets are judged on."""

    def __init__(self) -> None:
        self.figures: dict[str, float] = {}

    def targets(self) -> None:
        """Each target whose figure this run measured (the sections run decide which)."""

        def ratio(value: float) -> str:
            return f"{value:.2f}x"

        def over(value: float) -> str:
            return f"{value - 1:+.1%}"

        rows = [
            ("client overhead at p50, over raw HTTP", "client_over_raw", over, lambda v: v <= 1.03),
            ("client / raw HTTP req/s, worst level", "client_vs_raw", ratio, lambda v: v >= 0.97),
            ("xrerank bench / raw HTTP req/s, worst level", "bench_vs_raw", ratio, lambda v: v >= 0.95),
            ("bench / urllib loader, 48 callers, 8 words", "bench_vs_urllib_48", ratio, lambda v: v >= 0.95),
            ("bench / urllib loader, worst level and workload", "bench_vs_urllib", ratio, lambda v: v >= 0.95),
            ("bench's CPU per request / urllib's, worst case", "bench_cpu_vs_urllib", ratio, lambda v: v <= 1.0),
            ("Cohere-v2 route: p50 over direct raw HTTP", "route_over_raw", over, lambda v: v <= 1.10),
            ("Cohere-v2 route / direct req/s, worst level", "route_vs_raw", ratio, lambda v: v >= 0.9),
            ("48 callers / the best level, req/s", "at_48_vs_best", ratio, lambda v: v >= 0.9),
            ("compute-bound: served / in-process pairs/s", "base_ratio", ratio, lambda v: v >= 0.95),
            ("overhead-bound: served / in-process pairs/s", "demo_ratio", ratio, lambda v: v >= 0.6),
            ("xrerank --help", "help_s", lambda v: f"{v:.3f} s", lambda v: v <= 0.2),
            ("xrerank --help / xinference --help", "help_ratio", lambda v: f"{v:.3f}", lambda v: v <= 0.1),
            ("cache hit p50", "cache_hit_ms", lambda v: f"{v:.3f} ms", lambda v: v < 1.0),
        ]
        heading("targets")
        for name, key, shown, met in rows:
            if key in self.figures:
                value = self.figures[key]
                print(f"  {name:<48}{shown(value):>12}   {'met' if met(value) else 'NOT met'}")


def heading(title: str) -> None:
    print(f"\n== {title}")


def launched(session, model_name: str, uid: str | None = None, replica: int = 1, threads: int | None = None) -> str:
    from xrerank.deploy.engine import launch_model
    from xrerank.xinference.records import LaunchSettings

    settings = LaunchSettings(model_name, uid, replica=replica, device="cpu", threads_per_replica=threads)
    launch_model(session, settings, time.monotonic() + 600)
    return settings.uid


def paired_p50(
    calls: dict[str, Callable[[], object]], reference: str, seconds: float, rounds: int = 10
) -> dict[str, tuple[float, float]]:
    """Each way to call: (its median latency, the median of its per-round p50 over the reference's).

    Short rounds take turns and rotate their order, so the machine's drift and whatever runs
    first after a pause fall on every way alike; the ratio is taken within each round."""
    names = list(calls)
    for call in calls.values():  # warm up: the model was just launched
        stop = time.perf_counter() + 1.0
        while time.perf_counter() < stop:
            call()
    latencies: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        this_round: dict[str, list[float]] = {}
        for name in names[number % len(names) :] + names[: number % len(names)]:
            samples = this_round[name] = []
            stop = time.perf_counter() + seconds / rounds
            while time.perf_counter() < stop:
                begin = time.perf_counter()
                calls[name]()
                samples.append(time.perf_counter() - begin)
            latencies[name] += samples
        for name in names:
            ratios[name].append(statistics.median(this_round[name]) / statistics.median(this_round[reference]))
    return {name: (statistics.median(latencies[name]), statistics.median(ratios[name])) for name in names}


def client_overhead(session, seconds: float, report: Report) -> None:
    import requests
    from xinference_client import RESTfulClient

    from xrerank.perf.bench import Workload
    from xrerank.xinference.serving import open_client

    heading("1. client overhead: demo model, 1 replica, 16 documents of ~12 words, one caller, the API key")
    launched(session, "bench-demo")
    endpoint, key = session.endpoint, session.data_credentials().api_key
    route = cohere_v2_route()
    workload = Workload(docs=16, doc_tokens=12)
    documents = workload.documents(0)
    query = "which passage explains the capital city"
    body = {"model": "bench-demo", "query": query, "documents": documents}
    headers = {"Authorization": f"Bearer {key}"}
    kept_alive = requests.Session()
    handle = RESTfulClient(endpoint, api_key=key).get_model("bench-demo")
    with open_client(session, "bench-demo") as client:
        rows = {
            "xrerank client": lambda: client.rerank(query, documents),
            "raw HTTP, a connection per request": lambda: requests.post(
                f"{endpoint}/v1/rerank", json=body, headers={**headers, "Connection": "close"}, timeout=30
            ).json(),
            "raw HTTP, kept-alive session": lambda: kept_alive.post(
                f"{endpoint}/v1/rerank", json=body, headers=headers, timeout=30
            ).json(),
            "xinference-client": lambda: handle.rerank(documents, query),
            "raw HTTP via the Cohere-v2 route": lambda: requests.post(
                f"{route}/v2/rerank", json=body, headers={**headers, "Connection": "close"}, timeout=30
            ).json(),
        }
        measured = paired_p50(rows, "raw HTTP, a connection per request", seconds * 2)
    print(f"  {'':40}{'p50 ms':>9}{'vs raw HTTP':>13}   (the median of 10 paired rounds)")
    for name, (p50, ratio) in measured.items():
        print(f"  {name:40}{p50 * 1000:9.1f}{ratio:12.3f}x")
    report.figures["client_over_raw"] = measured["xrerank client"][1]
    report.figures["route_over_raw"] = measured["raw HTTP via the Cohere-v2 route"][1]
    session.server.terminate("bench-demo")


def cohere_v2_route() -> str:
    """The URL of the Cohere-v2 route beside the bench's embedded server."""
    from xrerank.xinference import gateway, local

    route = gateway.running(local.default_server_dir())
    if route is None:
        raise SystemExit("the embedded server runs without its Cohere-v2 route")
    return route.url


def closed_loop(send: Callable[[bytes], bool], bodies: list[bytes], callers: int, seconds: float, warmup: float):
    """`callers` threads, each sending the next body as soon as its last one is answered.

    Returns (requests/s, [latencies in s], errors) over the `seconds` after `warmup`; `send(body)`
    says whether the answer was a 200."""
    import threading

    begun = time.perf_counter()
    start, stop = begun + warmup, begun + warmup + seconds
    latencies: list[float] = []
    errors = [0]
    counter = iter(range(10**9))

    def caller() -> None:
        while True:
            begin = time.perf_counter()
            if begin >= stop:
                return
            ok = send(bodies[next(counter) % len(bodies)])
            if begin < start:
                continue
            if ok:
                latencies.append(time.perf_counter() - begin)
            else:
                errors[0] += 1

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / seconds, latencies, errors[0]


def raw_loader(endpoint: str, key: str, bodies: list[bytes], callers: int, seconds: float, warmup: float,
               path: str = "/v1/rerank"):  # fmt: skip
    """The minimal loader: threads, http.client, bodies encoded in advance, a connection per request."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}", "Connection": "close"}

    def send(body: bytes) -> bool:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status == 200

    return closed_loop(send, bodies, callers, seconds, warmup)


def concurrency(session, credentials: dict, demo_dir: Path, cores: int, levels: list[int], seconds: float,
                rounds: int, report: Report) -> None:  # fmt: skip
    """Raw HTTP, the client, `xrerank bench` and a login-token client take turns at each level."""
    import json

    from sentence_transformers import CrossEncoder

    from xrerank.client import Reranker
    from xrerank.client.http import Credentials
    from xrerank.perf.bench import Workload, _prepared, run_bench

    replicas = min(2, cores)
    uid = launched(session, "bench-demo", "bench-demo", replicas, max(1, cores // replicas))
    # At 48 callers a request waits ~2 s: the warm-up must fill the queue before the window opens.
    warmup = max(2.0, seconds / 3)
    workload = Workload(docs=16, doc_tokens=64, duration=seconds, warmup=warmup)
    threads = max(1, cores // replicas)
    heading(
        f"2. the data plane under concurrency: demo model, {replicas} replicas x {threads} thread(s), "
        f"{workload.docs} documents of {workload.doc_tokens} words; {rounds} alternating round(s) of {seconds:g} s "
        f"after {warmup:g} s of warm-up at each level"
    )
    key = session.data_credentials().api_key
    login = Credentials(username=credentials["username"], password=credentials["password"])
    bodies = [
        json.dumps({"model": uid, "query": q, "documents": d, "top_n": None}).encode() for q, d in _prepared(workload)
    ]
    model = CrossEncoder(str(demo_dir), device="cpu", max_length=512)
    pairs = [(q, doc) for q, documents in _prepared(workload)[:8] for doc in documents]

    def in_process() -> float:
        begin, scored = time.perf_counter(), 0
        while time.perf_counter() - begin < seconds:
            model.predict(pairs, batch_size=32)
            scored += len(pairs)
        return scored / (time.perf_counter() - begin)

    def client(callers: int, credentials) -> tuple[float, list[float], int]:
        with Reranker(session.endpoint, uid, credentials=credentials, retry_for=0, timeout=120,
                      connections=callers) as reranker:  # fmt: skip
            result = run_bench(reranker.rerank, Workload(**{**workload.__dict__, "concurrency": callers}))
        return result.requests_per_second, result.latencies, sum(result.errors.values())

    def cli(callers: int) -> tuple[float, list[float], int]:
        done = subprocess.run(
            [str(VENV_BIN / "xrerank"), "--endpoint", session.endpoint, "bench", "--model-uid", uid, "--concurrency",
             str(callers), "--duration", str(seconds), "--warmup", str(warmup), "--docs", "16", "--doc-tokens", "64",
             "--json"],
            capture_output=True, text=True,
        )  # fmt: skip
        answer = json.loads(done.stdout)
        p50 = (answer["latency_ms"]["p50"] or 0) / 1000
        return answer["requests_per_s"], [p50], answer["errors"]

    ways = {
        "raw HTTP": lambda n: raw_loader(session.endpoint, key, bodies, n, seconds, warmup),
        "xrerank client": lambda n: client(n, Credentials(api_key=key)),
        "xrerank bench": cli,
        "Cohere-v2 route": lambda n: raw_loader(cohere_v2_route(), key, bodies, n, seconds, warmup, "/v2/rerank"),
    }
    rows = []
    for callers in levels:
        rates: dict[str, list[float]] = {name: [] for name in ways}
        latencies: dict[str, list[float]] = {name: [] for name in ways}
        ratios: dict[str, list[float]] = {name: [] for name in ways}
        errors = dict.fromkeys(ways, 0)
        limits = []
        for number in range(rounds):
            names = list(ways)[number % len(ways) :] + list(ways)[: number % len(ways)]
            this_round = {}
            for name in names:
                rate, samples, failed = ways[name](callers)
                this_round[name] = rate
                rates[name].append(rate)
                latencies[name] += samples
                errors[name] += failed
            for name in ways:
                ratios[name].append(this_round[name] / this_round["raw HTTP"] if this_round["raw HTTP"] else 0.0)
            limits.append(in_process())
        login_rate = None
        if callers in (4, 48):
            login_rate, login_latencies, _ = client(callers, login)
        rows.append((callers, rates, latencies, ratios, errors, statistics.median(limits), login_rate))
    print(f"  {'callers':>7}  {'way':<16}{'req/s':>8}{'vs raw':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'errors':>7}{'pairs/s vs in-process':>23}")  # fmt: skip
    best = {name: max(statistics.median(row[1][name]) for row in rows) for name in ways}
    for callers, rates, latencies, ratios, errors, limit, login_rate in rows:
        for name in ways:
            rate = statistics.median(rates[name])
            ordered = sorted(latencies[name]) or [0.0]

            def pick(q: float, ordered=ordered) -> float:
                return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

            percentiles = f"{pick(0.5):9.0f}{pick(0.95):9.0f}{pick(0.99):9.0f}" if name != "xrerank bench" else \
                f"{pick(0.5):9.0f}{'':>18}"  # fmt: skip
            print(f"  {callers:>7}  {name:<16}{rate:8.1f}{statistics.median(ratios[name]):7.2f}x{percentiles}"
                  f"{errors[name]:>7}{rate * workload.docs / limit:22.2f}x")  # fmt: skip
        if login_rate is not None:
            versus = login_rate / statistics.median(rates["raw HTTP"])
            print(f"  {callers:>7}  {'login token':<16}{login_rate:8.1f}{versus:7.2f}x"
                  "   (a client sending the admin's login token, as xrerank did before)")  # fmt: skip
    print(f"  in-process CrossEncoder.predict, {torch_threads()} threads, batch 32: "
          f"{statistics.median([row[5] for row in rows]):.0f} pairs/s")  # fmt: skip
    report.figures["client_vs_raw"] = min(statistics.median(row[3]["xrerank client"]) for row in rows)
    report.figures["bench_vs_raw"] = min(statistics.median(row[3]["xrerank bench"]) for row in rows)
    report.figures["route_vs_raw"] = min(statistics.median(row[3]["Cohere-v2 route"]) for row in rows)
    at_48 = next((statistics.median(row[1]["raw HTTP"]) for row in rows if row[0] == 48), None)
    report.figures["at_48_vs_best"] = at_48 / best["raw HTTP"] if at_48 else float("nan")
    session.server.terminate(uid)


def urllib_loader(endpoint: str, key: str, bodies: list[bytes], callers: int, seconds: float, warmup: float):
    """The simplest loader: threads and urllib.request, bodies encoded in advance (a connection per request)."""
    import urllib.request

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def send(body: bytes) -> bool:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/v1/rerank", body, headers),
                                        timeout=120) as response:  # fmt: skip
                response.read()
                return response.status == 200
        except OSError:
            return False

    return closed_loop(send, bodies, callers, seconds, warmup)


def bench_cli(endpoint: str, uid: str, callers: int, seconds: float, warmup: float, docs: int, words: int):
    """`xrerank bench` as users run it; (requests/s, [its p50], errors)."""
    return bench_cli_costed(endpoint, uid, callers, seconds, warmup, docs, words)[:3]


def bench_cli_costed(endpoint: str, uid: str, callers: int, seconds: float, warmup: float, docs: int, words: int,
                     max_requests: int | None = None):  # fmt: skip
    """`xrerank bench` as users run it: (requests/s, [its p50], errors, CPU seconds, requests sent)."""
    import json
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [str(VENV_BIN / "xrerank"), "--endpoint", endpoint, "bench", "--model-uid", uid, "--concurrency", str(callers),
         "--duration", str(seconds), "--warmup", str(warmup), "--docs", str(docs), "--doc-tokens", str(words),
         "--json", *(["--max-requests", str(max_requests)] if max_requests else [])],
        capture_output=True, text=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    answer = json.loads(done.stdout)
    p50 = [(answer["latency_ms"]["p50"] or 0) / 1000]
    return answer["requests_per_s"], p50, answer["errors"], cpu, answer["sent_with_warmup"]


def costed(loader: Callable[[], tuple]) -> tuple:
    """An in-process loader's figures, with the CPU it used and the requests it sent (warm-up included)."""
    from http.client import HTTPConnection

    sent = [0]
    original = HTTPConnection.request

    def counting(self, *args, **kwargs):
        sent[0] += 1
        return original(self, *args, **kwargs)

    HTTPConnection.request = counting  # urllib sends through http.client too
    cpu = time.process_time()
    try:
        figures = loader()
    finally:
        HTTPConnection.request = original
    return (*figures, time.process_time() - cpu, sent[0])


def bench_own_cost(session, cores: int, levels: list[int], word_counts: list[int], seconds: float, rounds: int,
                   report: Report) -> None:  # fmt: skip
    """`xrerank bench` beside the simplest loaders: what it measures must be the server, not itself.

    The loaders and the server share the machine, so a loader's own CPU per request comes out of
    the server's share; on an overhead-bound workload (8-word documents) it shows."""
    import json

    from xrerank.perf.bench import Workload, _prepared

    replicas = min(2, cores)
    uid = launched(session, "bench-demo", "bench-own-cost", replicas, max(1, cores // replicas))
    key = session.data_credentials().api_key
    warmup = max(2.0, seconds / 3)
    # bench's fixed cost (Python, imports, finding the model and its key), taken off its per-request CPU
    fixed = statistics.median(bench_cli_costed(session.endpoint, uid, 1, 0.5, 0, 16, 8, 1)[3] for _ in range(3))

    def bench_costed(callers: int, words: int) -> tuple:
        rate, p50, failed, cpu, sent = bench_cli_costed(session.endpoint, uid, callers, seconds, warmup, 16, words)
        return rate, p50, failed, max(0.0, cpu - fixed), sent

    heading(
        f"8. bench's own cost: demo model, {replicas} replicas, 16 documents; the urllib loader, the http.client "
        f"loader and `xrerank bench` in turn, {rounds} rounds of {seconds:g} s after {warmup:g} s of warm-up; "
        f"CPU per request sent, warm-up included (bench's: less its {fixed * 1000:.0f} ms of start-up)"
    )
    print(f"  {'words':>5}  {'callers':>7}  {'way':<20}{'req/s':>8}{'vs urllib':>11}{'p50 ms':>9}{'errors':>7}"
          f"{'CPU/req µs':>12}{'vs urllib':>11}")  # fmt: skip
    worst, cpu_ratios = [], []
    for words in word_counts:
        workload = Workload(docs=16, doc_tokens=words)
        bodies = [json.dumps({"model": uid, "query": q, "documents": d}).encode() for q, d in _prepared(workload)]
        ways = {
            "urllib loader": lambda n, b=bodies: costed(
                lambda: urllib_loader(session.endpoint, key, b, n, seconds, warmup)
            ),
            "http.client loader": lambda n, b=bodies: costed(
                lambda: raw_loader(session.endpoint, key, b, n, seconds, warmup)
            ),
            "xrerank bench": lambda n, w=words: bench_costed(n, w),
        }
        for callers in levels:
            rates: dict[str, list[float]] = {way: [] for way in ways}
            ratios: dict[str, list[float]] = {way: [] for way in ways}
            p50s: dict[str, list[float]] = {way: [] for way in ways}
            errors = dict.fromkeys(ways, 0)
            cpu_per_request: dict[str, list[float]] = {way: [] for way in ways}
            for number in range(rounds):
                this_round = {}
                for way in list(ways)[number % 3 :] + list(ways)[: number % 3]:
                    rate, samples, failed, cpu, sent = ways[way](callers)
                    this_round[way] = rate
                    rates[way].append(rate)
                    p50s[way].append(statistics.median(samples) if samples else 0.0)
                    errors[way] += failed
                    cpu_per_request[way].append(cpu / sent if sent else 0.0)
                base = this_round["urllib loader"]
                for way in ways:
                    ratios[way].append(this_round[way] / base if base else 0.0)
            base_cpu = statistics.median(cpu_per_request["urllib loader"])
            for way in ways:
                ratio = statistics.median(ratios[way])
                cpu = statistics.median(cpu_per_request[way])
                print(f"  {words:>5}  {callers:>7}  {way:<20}{statistics.median(rates[way]):8.1f}{ratio:10.2f}x"
                      f"{statistics.median(p50s[way]) * 1000:9.1f}{errors[way]:>7}{cpu * 1e6:12.0f}"
                      f"{cpu / base_cpu if base_cpu else 0:10.2f}x")  # fmt: skip
            bench_ratio = statistics.median(ratios["xrerank bench"])
            worst.append(bench_ratio)
            cpu_ratios.append(statistics.median(cpu_per_request["xrerank bench"]) / base_cpu if base_cpu else 0.0)
            if words == 8 and callers == 48:
                report.figures["bench_vs_urllib_48"] = bench_ratio
    if worst:
        report.figures["bench_vs_urllib"] = min(worst)
        report.figures["bench_cpu_vs_urllib"] = max(cpu_ratios)
    session.server.terminate(uid)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def served_vs_in_process(session, models: dict[str, Path], cores: int, seconds: float, report: Report) -> None:
    """Rounds that alternate in-process and served runs, so that drift in the machine's speed
    (up to 30% between runs of this script here) falls on both sides of each ratio: a ratio is
    taken within each round, and the median of the rounds is printed.

    Served: one replica with every core, and (on several cores) one replica per core with one
    thread each, the setting that `xrerank tune` finds best for short documents."""
    from sentence_transformers import CrossEncoder

    from xrerank.perf.bench import Workload, run_bench
    from xrerank.xinference.serving import open_client

    splits = [(1, cores)] + ([(cores, 1)] if cores > 1 else [])
    # (model, documents per request, words per document or None for 256 tokens, callers, seconds, figure)
    cases = [
        ("bench-demo", 16, 12, (1, 2, 4), seconds, "demo_ratio"),
        ("bench-base", 4, None, (1, 2), seconds * 1.5, "base_ratio"),
    ]
    for name, docs, words, concurrencies, duration, figure in cases:
        model = CrossEncoder(str(models[name]), device="cpu", max_length=512)
        workload = Workload(docs=docs, doc_tokens=words or words_for_tokens(model.tokenizer, 256))
        document_tokens, pair_tokens = token_counts(model.tokenizer, workload)
        heading(
            f"3. the limit: {name}, {docs} documents of {workload.doc_tokens} words = {document_tokens:.0f} tokens "
            f"({pair_tokens:.0f} per query-document pair), 3 alternating rounds of {duration:g} s"
        )

        def predict(query: str, documents: list[str], model=model) -> object:
            return model.predict([(query, document) for document in documents])

        clients = {}
        for replicas, threads in splits:
            uid = launched(session, name, f"{name}-{replicas}x{threads}", replicas, threads)
            clients[replicas, threads] = open_client(
                session, uid, retry_for=0, connections=max(concurrencies), timeout=120
            )
        served = [(split, callers) for split in splits for callers in concurrencies if callers >= split[0]]
        ratios: dict[tuple, list[float]] = {run: [] for run in served}
        pairs: dict[tuple, list[float]] = {run: [] for run in served}
        limits = []
        for call in (predict, *(client.rerank for client in clients.values())):
            run_bench(call, replace(workload, duration=1, max_requests=2))
        for _ in range(3):
            limits.append(run_bench(predict, replace(workload, duration=duration)).pairs_per_second)
            for split, callers in served:
                result = run_bench(clients[split].rerank, replace(workload, concurrency=callers, duration=duration))
                if result.errors:
                    print(f"  errors: {dict(result.errors)}")
                pairs[split, callers].append(result.pairs_per_second)
                ratios[split, callers].append(result.pairs_per_second / limits[-1])
        limit = statistics.median(limits)
        print(f"  in-process CrossEncoder.predict, {cores} threads, one caller:  {limit:7.1f} pairs/s")
        for (replicas, threads), callers in served:
            print(
                f"  served, {replicas} replica(s) x {threads} thread(s), {callers} caller(s): "
                f"{statistics.median(pairs[(replicas, threads), callers]):7.1f} pairs/s = "
                f"{statistics.median(ratios[(replicas, threads), callers]):.2f}x"
            )
        report.figures[figure] = max(statistics.median(values) for values in ratios.values())
        for client in clients.values():
            client.close()
            session.server.terminate(client.model_uid)


def token_counts(tokenizer, workload) -> tuple[float, float]:
    """Mean tokens of a workload's document alone and of a (query, document) pair, as the model sees them."""
    import random

    query = workload.query(0, random.Random(0))[0]
    documents = workload.documents(0)
    alone = [len(tokenizer(document, add_special_tokens=False)["input_ids"]) for document in documents]
    pairs = [len(tokenizer(query, document, truncation=True, max_length=512)["input_ids"]) for document in documents]
    return statistics.mean(alone), statistics.mean(pairs)


def words_for_tokens(tokenizer, tokens: int) -> int:
    """How many of the workload's words make a document of `tokens` tokens for this tokenizer.

    A generated model's small vocabulary splits most words into several pieces, so the word count
    that makes 256 tokens is measured, not assumed."""
    from xrerank.perf.bench import Workload

    sample = Workload(docs=8, doc_tokens=50)
    per_word = token_counts(tokenizer, sample)[0] / sample.doc_tokens
    return max(1, round(tokens / per_word))


def configuration_matrix(session, cores: int, seconds: float) -> None:
    from xrerank.cli.render import tune_text
    from xrerank.perf.bench import Workload
    from xrerank.perf.tune import Setting, tune
    from xrerank.xinference.records import LaunchSettings

    heading("4. replicas x threads per replica x micro-batching: demo model, 16 x ~12 words, 4 callers")
    to_try = [Setting(r, t) for r in (1, 2) for t in (1, cores) if r * t <= 2 * cores]
    to_try += [Setting(1, cores, batch_interval=0.0), Setting(1, cores, batch_size=64, batch_interval=0.01)]
    to_try += [Setting(2, max(1, cores // 2), batch_interval=0.0)]
    settings = LaunchSettings("bench-demo", "bench-demo", device="cpu")
    workload = Workload(docs=16, doc_tokens=12, concurrency=4, duration=seconds, warmup=2.0)
    tuning = tune(session, settings, workload, float("inf"), lambda _: None, to_try=to_try)
    print(tune_text(tuning))


def cache_hits(session, seconds: float, report: Report) -> None:
    """Throughput with and without the cache under 4 callers; then what one hit costs, with one caller.

    Under 4 callers a hit's latency is mostly its wait for the GIL (4 / requests per second), not
    the cache's work, so the hit target is judged on the one-caller run over the warmed cache."""
    from xrerank.client.cache import ScoreCache
    from xrerank.perf.bench import Workload, run_bench
    from xrerank.xinference.serving import open_client

    heading("5. score cache: demo model, 4 callers drawing from 50 distinct queries")
    launched(session, "bench-demo")
    workload = Workload(docs=16, doc_tokens=12, concurrency=4, duration=seconds, queries=50)
    cache = ScoreCache(10_000)
    for cached in (None, cache):
        with open_client(session, "bench-demo", retry_for=0, cache=cached, connections=4) as client:
            result = run_bench(client.rerank, workload, cache=cached).as_dict()
            line = f"  cache {'off' if cached is None else '10000 entries'}: {result['requests_per_s']:9.1f} requests/s"
            if cached is not None:
                line += f", {result['cache']['hit_rate']:.1%} of pairs hit, hit p50 {result['cache']['hit_p50_ms']} ms"
                alone = run_bench(client.rerank, replace(workload, concurrency=1), cache=cache).as_dict()["cache"]
                line += f"; one caller over the warmed cache: hit p50 {alone['hit_p50_ms']} ms"
                report.figures["cache_hit_ms"] = alone["hit_p50_ms"]
        print(line)
    session.server.terminate("bench-demo")


def start_up(session, report: Report) -> None:
    heading("6. start-up: median wall time of 5 runs")
    xrerank, xinference = str(VENV_BIN / "xrerank"), shutil.which("xinference", path=str(VENV_BIN))
    endpoint, key = session.endpoint, session.data_credentials().api_key
    commands = {
        "xrerank --help": [xrerank, "--help"],
        "xinference --help": [xinference, "--help"],
        "xrerank status": [xrerank, "--endpoint", endpoint, "--api-key", key, "status"],
        "xinference list": [xinference, "list", "--endpoint", endpoint, "--api-key", key],
    }
    timings = {}
    for name, command in commands.items():
        runs = []
        for _ in range(5):
            begin = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            runs.append(time.perf_counter() - begin)
        timings[name] = statistics.median(runs)
    for name, value in timings.items():
        print(f"  {name:20}{value:8.3f} s")
    print(f"  xrerank --help / xinference --help: {timings['xrerank --help'] / timings['xinference --help']:.3f}")
    print(f"  xrerank status / xinference list:   {timings['xrerank status'] / timings['xinference list']:.3f}")
    report.figures["help_s"] = timings["xrerank --help"]
    report.figures["help_ratio"] = timings["xrerank --help"] / timings["xinference --help"]


def gpu_limits(models: dict[str, Path], seconds: float) -> None:
    """With a GPU: the in-process limit of each model on it, in fp16, at batch 32 and 128."""
    import torch

    from xrerank.perf.bench import Workload, in_process_limit

    if not torch.cuda.is_available():
        print("\n== 7. GPU: none on this machine; the GPU figures in the README were measured elsewhere")
        return
    heading(f"7. the in-process limit on {torch.cuda.get_device_name(0)}, float16, 16 documents of 64 words")
    for name, directory in models.items():
        limit = in_process_limit(directory, 512, "float16", Workload(docs=16, doc_tokens=64), seconds=seconds)
        print(f"  {name}: {limit.rates()} pairs/s")


if __name__ == "__main__":
    main()
