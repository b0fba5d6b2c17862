"""The doctor's memory formula against what launched replicas really use, side by side in one run.

    .venv/bin/python scripts/bench_memory.py

Starts its own xinference-local (auth off, loopback, in a scratch XRERANK_HOME), launches the demo model and a base-size
random model (12 layers, hidden 768) on CPU, sends each 32 documents of max_tokens, and prints the
peak RSS of the replica process (VmHWM) next to `xrerank.checks.doctor.estimate_memory`.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path


def base_config() -> dict:
    """BERT-base shapes on the demo model's XLM-RoBERTa layout."""
    from xrerank.weights.generated import DEMO_CONFIG

    shapes = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
    return {**DEMO_CONFIG, **shapes, "initializer_range": 0.02}


def scratch_server(root: Path, auth: bool):
    """A fresh embedded server in `root` (its XRERANK_HOME) on a free port; returns (session, credentials).

    With auth on, the session administers with the admin login and reranks with the API key,
    as every xrerank command does; `xrerank` run with XRERANK_HOME=root finds the same server."""
    import json
    import os

    from xrerank.xinference import local
    from xrerank.xinference.session import Options, open_session

    os.environ["XRERANK_HOME"] = str(root)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(f"starting xinference-local on 127.0.0.1:{port} (auth {'on' if auth else 'off'})")
    server, _ = local.start(local.default_server_dir(), port, auth=auth)
    credentials = json.loads((server.directory / local.CREDENTIALS_FILE).read_text()) if auth else {}
    return open_session(Options(server.endpoint)), credentials


def peak_rss(uid: str) -> int:
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if " ".join(process.info["cmdline"] or []).startswith(f"Model: {uid}-rep0"):
            status = Path(f"/proc/{process.pid}/status").read_text()
            return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024
    raise RuntimeError(f"no replica process for {uid}")


def main() -> None:
    import json

    from xrerank.checks.doctor import GIB, count_parameters, estimate_memory
    from xrerank.deploy.engine import launch_model, register_model
    from xrerank.deploy.spec import build_spec
    from xrerank.weights.generated import make_demo_model, make_random_model
    from xrerank.weights.modeldir import inspect_model_dir
    from xrerank.xinference import local
    from xrerank.xinference.records import LaunchSettings
    from xrerank.xinference.serving import open_client

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        models = {
            "mem-demo": make_demo_model(root / "demo"),
            "mem-base": make_random_model(root / "base", base_config(), "xrerank/random-base-12x768"),
        }
        session, _ = scratch_server(root, auth=False)
        xinference = session.server
        try:
            print(f"{'model':10}{'params':>10}{'max_tokens':>12}{'estimate GiB':>14}{'peak RSS GiB':>14}{'ratio':>8}")
            for uid, directory in models.items():
                register_model(xinference, build_spec(inspect_model_dir(directory), uid, max_tokens=512))
                launch_model(session, LaunchSettings(uid, uid, device="cpu"), time.monotonic() + 300)
                with open_client(session, uid, timeout=120) as reranker:
                    reranker.rerank("query " * 8, ["word " * 600] * 32)  # 32 pairs truncated to 512 tokens
                config = json.loads((directory / "config.json").read_text())
                parameters = count_parameters(directory)
                estimate = estimate_memory(config, parameters, 512, fp16=False, on_gpu=False).total
                measured = peak_rss(uid)
                print(
                    f"{uid:10}{parameters / 1e6:9.1f}M{512:>12}{estimate / GIB:14.2f}{measured / GIB:14.2f}"
                    f"{estimate / measured:8.2f}"
                )
                xinference.terminate(uid)
        finally:
            local.stop(local.default_server_dir())


if __name__ == "__main__":
    main()
