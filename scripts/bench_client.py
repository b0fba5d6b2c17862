"""Client overhead, side by side in one run: the xrerank client, raw HTTP, xinference-client and
in-process CrossEncoder, on the same deployed model and the same inputs.

    .venv/bin/python scripts/bench_client.py                 # starts its own server with the demo model
    .venv/bin/python scripts/bench_client.py --endpoint URL --model-uid UID --model-dir DIR

Prints p50 latency and sequential throughput of each, and each as a ratio to in-process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WORDS = "retrieval reranker query passage relevance vector index score model server".split()


def measure(call: Callable[[], object], calls: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    latencies = []
    started = time.perf_counter()
    for _ in range(calls):
        begin = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - begin)
    return statistics.median(latencies), calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint")
    parser.add_argument("--model-uid")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        stop = lambda: None  # noqa: E731
        if args.endpoint is None:
            args.endpoint, args.model_uid, args.model_dir, stop = start_demo(Path(scratch))
        try:
            run(args)
        finally:
            stop()


def start_demo(scratch: Path) -> tuple[str, str, Path, Callable[[], None]]:
    import socket

    from xrerank import local
    from xrerank.demo import make_demo_model
    from xrerank.deploy import launch_model, register_model
    from xrerank.modeldir import inspect_model_dir
    from xrerank.server import LaunchSettings, Xinference
    from xrerank.spec import build_spec

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(f"starting xinference-local on port {port} with the demo model (about a minute)")
    server, _ = local.start(scratch / "server", port, auth=False)
    model_dir = make_demo_model(scratch / "demo")
    xinference = Xinference(server.endpoint)
    register_model(xinference, build_spec(inspect_model_dir(model_dir), "bench-demo", max_tokens=512))
    launch_model(xinference, LaunchSettings("bench-demo", "bench-demo", device="cpu"), time.monotonic() + 300)
    return server.endpoint, "bench-demo", model_dir, lambda: local.stop(scratch / "server")


def run(args: argparse.Namespace) -> None:
    import requests
    import torch
    from sentence_transformers import CrossEncoder
    from xinference_client import RESTfulClient

    from xrerank.client import Reranker

    query = "how does a reranker score passages"
    documents = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)) for i in range(args.docs)]
    reranker = Reranker(args.endpoint, args.model_uid)
    session = requests.Session()
    body = {"model": args.model_uid, "query": query, "documents": documents}
    handle = RESTfulClient(args.endpoint).get_model(args.model_uid)
    rows = {
        "xrerank client": lambda: reranker.rerank(query, documents),
        "raw HTTP (requests)": lambda: session.post(f"{args.endpoint}/v1/rerank", json=body, timeout=30).json(),
        "xinference-client": lambda: handle.rerank(documents, query),
    }
    if args.model_dir is not None:
        model = CrossEncoder(str(args.model_dir), device="cpu")
        pairs = [(query, d) for d in documents]
        rows["in-process CrossEncoder"] = lambda: model.predict(pairs)
    results = {name: measure(call, args.calls) for name, call in rows.items()}
    base = results.get("in-process CrossEncoder")
    raw = results["raw HTTP (requests)"]
    print(f"\n{args.docs} documents x {args.calls} calls, torch threads {torch.get_num_threads()}, {args.endpoint}")
    print(f"{'':26}{'p50 ms':>9}{'calls/s':>10}{'p50 vs raw':>12}{'calls/s vs in-process':>24}")
    for name, (p50, throughput) in results.items():
        versus = f"{throughput / base[1]:.2f}x" if base else "-"
        print(f"{name:26}{p50 * 1000:9.1f}{throughput:10.1f}{p50 / raw[0]:11.2f}x{versus:>24}")


if __name__ == "__main__":
    main()
