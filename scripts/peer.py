"""The deployment beside infinity-emb, the server users would pick instead, on the same model directory.

    .venv/bin/python scripts/peer.py --install     # first: infinity-emb 0.0.78 into .peer-venv (~3 min)
    .venv/bin/python scripts/peer.py               # the demo and the base-size model, 1/4/16/48 callers
    .venv/bin/python scripts/peer.py --quick --models demo --callers 1,4

Starts its own embedded Xinference (auth on, as users run it) in a scratch XRERANK_HOME and
generates the models (the demo: 2 layers, hidden 64; a base-size one: 12 layers, hidden 768).
For each model it deploys the model with xrerank in the layout that wins throughput on CPU (one
replica per core, one thread each) and starts `infinity_emb v2 --engine torch --device cpu` on the
same directory with an API key of its own. Then, at each number of callers, in alternating
rounds, the same raw loader (threads, http.client, bodies encoded in advance, a connection per
request) loads:

  xinference        Xinference's /v1/rerank directly;
  xinference+spread the same deployment through xrerank's client with one chunk per replica
                    (`Reranker(chunk_size=ceil(docs / replicas))`: a lone request keeps every core busy);
  infinity          infinity-emb's /rerank.

It prints pairs/s and latency percentiles per side and the ratio to infinity. Both servers stay up
during the whole run, idle while the other is measured. infinity-emb installs into its own venv:
it pins transformers 4 and sentence-transformers 3, which the server side of xrerank does not take.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = REPO / ".peer-venv"
INFINITY = "infinity-emb[server,torch]==0.0.78"
TORCH = "torch==2.13.0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true", help=f"Install {INFINITY} into --venv first.")
    parser.add_argument("--venv", type=Path, default=PEER_VENV, help="infinity-emb's venv (default: %(default)s).")
    parser.add_argument("--models", default="demo,base", help="demo, base, or both.")
    parser.add_argument("--callers", default="1,4,16,48")
    parser.add_argument("--docs", type=int, default=16, help="Documents per request, demo model.")
    parser.add_argument("--words", type=int, default=48, help="Words per document, demo model.")
    parser.add_argument("--base-docs", type=int, default=4, help="Documents per request, base-size model.")
    parser.add_argument("--base-words", type=int, default=16, help="Words per document, base-size model.")
    parser.add_argument(
        "--layout", help="Xinference's replicas x threads each, e.g. 1x2 (default: a replica per core)."
    )
    parser.add_argument("--quick", action="store_true", help="Shorter rounds, noisier figures.")
    args = parser.parse_args()
    if args.install:
        install(args.venv)
    infinity = args.venv / "bin" / "infinity_emb"
    if not infinity.exists():
        raise SystemExit(f"no infinity-emb in {args.venv}: run with --install first")
    seconds, rounds = (5.0, 2) if args.quick else (10.0, 3)
    levels = [int(n) for n in args.callers.split(",")]

    import torch
    from bench_memory import base_config, scratch_server

    from xrerank.weights.generated import make_demo_model, make_random_model
    from xrerank.xinference import local

    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, torch {torch.__version__}; {rounds} alternating rounds of {seconds:g} s after "
          f"{seconds / 5:g} s of warm-up per way and level")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        session, _ = scratch_server(root, auth=True)
        try:
            for name in args.models.split(","):
                directory = (
                    make_demo_model(root / "demo")
                    if name == "demo"
                    else make_random_model(root / "base", base_config(), "xrerank/random-base-12x768")
                )
                docs, words = (args.docs, args.words) if name == "demo" else (args.base_docs, args.base_words)
                layout = tuple(int(n) for n in args.layout.split("x")) if args.layout else (max(1, min(cores, 4)), 1)
                compare(session, name, directory, infinity, layout, levels, docs, words, seconds, rounds)
        finally:
            local.stop(local.default_server_dir())


def install(venv: Path) -> None:
    """infinity-emb into its own venv, with the CPU torch chosen first (as scripts/install.sh does)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    index = ["--index-url", "https://download.pytorch.org/whl/cpu", "--extra-index-url", "https://pypi.org/simple"]
    # The CPU build (the comparison runs on CPU): a local wheel, else PyTorch's CPU index; PyPI's
    # Linux wheel would be the multi-GB CUDA one.
    if subprocess.run([*pip, "--no-index", "--no-deps", f"{TORCH}+cpu"], capture_output=True).returncode:
        subprocess.run([*pip, f"{TORCH}+cpu", *index], check=True)
    subprocess.run([*pip, INFINITY], check=True)


def compare(session, name: str, directory: Path, infinity: Path, layout: tuple[int, int], levels: list[int],
            docs: int, words: int, seconds: float, rounds: int) -> None:  # fmt: skip
    from bench import launched, raw_loader

    from xrerank.deploy.engine import register_model, terminate_model
    from xrerank.deploy.spec import build_spec
    from xrerank.perf.bench import Workload, _prepared, run_bench
    from xrerank.weights.modeldir import inspect_model_dir
    from xrerank.xinference.serving import open_client

    uid = f"peer-{name}"
    register_model(session.server, build_spec(inspect_model_dir(directory), uid, max_tokens=512))
    replicas, threads = layout
    launched(session, uid, uid, replicas, threads)
    key = session.data_credentials().api_key
    peer = start_infinity(infinity, directory)
    try:
        workload = Workload(docs=docs, doc_tokens=words)
        prepared = _prepared(workload)
        bodies = [json.dumps({"model": uid, "query": q, "documents": d}).encode() for q, d in prepared]
        peer_bodies = [json.dumps({"model": "peer", "query": q, "documents": d}).encode() for q, d in prepared]
        warmup = seconds / 5
        chunk = -(-docs // replicas)

        def spread(callers: int) -> tuple[float, list[float], int]:
            load = Workload(docs=docs, doc_tokens=words, concurrency=callers, duration=seconds, warmup=warmup)
            with open_client(session, uid, retry_for=0, chunk_size=chunk, parallel=replicas,
                             connections=callers * replicas) as client:  # fmt: skip
                result = run_bench(client.rerank, load)
            return result.requests_per_second, result.latencies, sum(result.errors.values())

        ways = {
            "xinference": lambda n: raw_loader(session.endpoint, key, bodies, n, seconds, warmup),
            "xinference+spread": spread,
            "infinity": lambda n: raw_loader(peer.url, peer.key, peer_bodies, n, seconds, warmup, "/rerank"),
        }
        print(f"\n== {name} model, {docs} documents of {words} words a request: xinference {replicas} replica(s) x "
              f"{threads} thread(s), spread = {chunk} a chunk; infinity-emb, torch")  # fmt: skip
        print(f"  {'callers':>7}  {'way':<18}{'pairs/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>7}"
              f"{'vs infinity':>13}")  # fmt: skip
        for callers in levels:
            rates: dict[str, list[float]] = {way: [] for way in ways}
            latencies: dict[str, list[float]] = {way: [] for way in ways}
            errors = dict.fromkeys(ways, 0)
            for number in range(rounds):
                order = list(ways)[number % len(ways) :] + list(ways)[: number % len(ways)]
                for way in order:
                    rate, samples, failed = ways[way](callers)
                    rates[way].append(rate * docs)
                    latencies[way] += samples
                    errors[way] += failed
            reference = statistics.median(rates["infinity"])
            for way in ways:
                ordered = sorted(latencies[way]) or [0.0]

                def pick(q: float, ordered=ordered) -> float:
                    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

                rate = statistics.median(rates[way])
                print(f"  {callers:>7}  {way:<18}{rate:9.0f}{pick(0.5):9.1f}{pick(0.95):9.1f}{pick(0.99):9.1f}"
                      f"{errors[way]:>7}{rate / reference if reference else 0:12.2f}x")  # fmt: skip
    finally:
        peer.stop()
        terminate_model(session.server, uid)


class Infinity:
    def __init__(self, process: subprocess.Popen, port: int, key: str, log: Path) -> None:
        self.process, self.port, self.key, self.log = process, port, key, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_infinity(infinity: Path, directory: Path) -> Infinity:
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = secrets.token_urlsafe(16)
    log = directory.parent / f"infinity-{directory.name}.log"
    command = [str(infinity), "v2", "--model-id", str(directory), "--served-model-name", "peer", "--engine", "torch",
               "--device", "cpu", "--port", str(port), "--api-key", key]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    with log.open("wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=stream, env=env, start_new_session=True)
    peer = Infinity(process, port, key, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"infinity-emb exited with {process.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            request = urllib.request.Request(f"{peer.url}/models", headers={"Authorization": f"Bearer {key}"})
            urllib.request.urlopen(request, timeout=2).read()
            return peer
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    peer.stop()
    raise SystemExit(f"infinity-emb did not answer in 300 s; see {log}")


if __name__ == "__main__":
    main()
