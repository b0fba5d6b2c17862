"""`xrerank up`: the embedded server if nothing answers, the deploy, and a sample ranking."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from xrerank.client import Result
from xrerank.deploy.engine import DeployResult, deploy
from xrerank.deploy.target import Target, load_target, resolve
from xrerank.errors import BadInput, Unreachable
from xrerank.families import by_name
from xrerank.files import xrerank_home
from xrerank.xinference.local import (
    DEFAULT_PORT,
    LocalServer,
    answers,
    default_server_dir,
    ensure_route,
    inspect_server,
    start,
    untrusting,
)
from xrerank.xinference.serving import open_client
from xrerank.xinference.session import Options, open_session

SAMPLE_QUERY = "What is AI?"
SAMPLE_DOCUMENTS = [
    "Artificial intelligence is the ability of machines to learn and reason.",
    "Apples are rich in dietary fibre.",
    "Paris is the capital of France.",
]
DEMO_CONFIG = "demo.yaml"
DEFAULT_CONFIG = "bge-reranker-v2-m3-cpu.yaml"


def shipped_config(name: str) -> Path:
    """A deployment file shipped with xrerank (configs/ in a checkout, xrerank/configs when installed)."""
    path = Path(str(resources.files("xrerank.configs") / name))
    if not path.is_file():
        raise BadInput(f"{name} is not a shipped deployment file; pass a FILE")
    return path


def demo_of(target: Target, family: str) -> Target:
    """The demo deployment with another family's tiny model: its name meets the family's routing rule."""
    chosen = by_name(family)
    if not chosen.demo_id:
        raise BadInput(f"no offline demo exists for the {chosen.title} family")
    if chosen.name == "xlm-roberta":
        return target
    deployment = target.deployment
    update = {
        "weights": deployment.weights.model_copy(update={"model_id": chosen.demo_id}),
        "registration": deployment.registration.model_copy(
            update={"model_name": f"demo-{chosen.name}-reranker", "trust_remote_code": chosen.runs_repository_code}
        ),
        "launch": deployment.launch.model_copy(update={"model_uid": f"demo-{chosen.name}", "replica": 1}),
    }
    return resolve(deployment.model_copy(update=update), target.base, target.home)


@dataclass
class UpResult:
    deployed: DeployResult
    sample: list[Result]
    file: Path
    demo: bool
    server: LocalServer | None  # the embedded server, when up started it or found it

    def as_dict(self) -> dict:
        return {
            "endpoint": self.deployed.endpoint,
            "model_uid": self.deployed.uid,
            "changed": self.deployed.changed,
            "demo": self.demo,
            "family": self.deployed.family,
            "file": str(self.file),
            "sample": [{"index": r.index, "score": r.score, "document": r.document} for r in self.sample],
        }


def up(
    options: Options,
    file: Path | None,
    demo: bool,
    deadline: float,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    progress: Callable[[str], None] = lambda message: None,
    family: str | None = None,
    v2_port: int | None = None,
) -> UpResult:
    if file is not None and demo:
        raise BadInput("give a deployment FILE or --demo, not both")
    if family is not None and not demo:
        raise BadInput("--family chooses the demo model's architecture: use it with --demo")
    file = file or shipped_config(DEMO_CONFIG if demo else DEFAULT_CONFIG)
    target = load_target(file, xrerank_home())
    if family is not None:
        target = demo_of(target, family)
    trust = target.deployment.registration.trust_remote_code
    embedded, foreign = None, False
    if options.endpoint is None:
        running = inspect_server(default_server_dir())
        if running.state == "running" and running.server is not None:
            embedded = running.server
            if trust and not embedded.trust_remote_code:
                raise untrusting(default_server_dir())
            ensure_route(embedded, v2_port)
        elif answers(f"http://127.0.0.1:{port}"):
            progress(f"using the Xinference that answers on 127.0.0.1:{port} (not started by xrerank)")
            foreign = True
        else:
            progress(f"starting Xinference on {host}:{port} (about 30 s)")
            embedded, _ = start(default_server_dir(), port, True, max(1.0, deadline - time.monotonic()), host,
                                trust, v2_port)  # fmt: skip
        endpoint = embedded.endpoint if embedded else f"http://127.0.0.1:{port}"
        options = Options(endpoint, options.api_key, options.username, options.password, options.timeout)
    session = open_session(options, target.deployment, progress)
    try:
        auth = session.server.auth_enabled()
    except Unreachable as exc:
        raise Unreachable(f"{exc}; drop --endpoint to use the embedded server") from None
    if foreign and auth and not session.server.credentials:
        raise Unreachable(
            f"{session.endpoint} is an Xinference that xrerank did not start, with auth on, and no credentials "
            "were given: pass --username/--password for it, or start xrerank's own on a free port with --port"
        )
    result = deploy(session, target, deadline, progress=progress)
    with open_client(session, result.uid) as client:
        sample = client.rerank(SAMPLE_QUERY, SAMPLE_DOCUMENTS)
    return UpResult(result, sample, file, target.demo, embedded)
