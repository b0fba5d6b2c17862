"""Every reranker family that can be made offline, deployed on the real server down the path its
real model takes, verified, and its served scores equal to that family's own scoring in process.

The shipped configs for Qwen3-Reranker-0.6B and ms-marco-MiniLM-L6-v2 are deployed as they are, with
the tiny model of their family served under the real model id by a local fake hub (ModelScope for
Qwen3, the Hugging Face Hub for MiniLM). A model that ships its own code is refused without the
opt-in, fails in one line on a server started without trust, and serves on one started with it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import DEMO, free_port

pytestmark = pytest.mark.e2e
CONFIGS = DEMO.parent
QUERY = "what is the capital of france"
DOCUMENTS = ["paris is the capital of france", "apple fruit fibre", "the great wall dynasty", "python code",
             "tesla motors factory", "beijing shanghai"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from xrerank.families import demo_families
    from xrerank.weights.generated import make_demo_model

    root = tmp_path_factory.mktemp("tiny")
    return {f.name: make_demo_model(root / f.name, family=f.name) for f in demo_families()}


def _as_hub_repo(model: Path, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo") / model.name
    shutil.copytree(model, repo, ignore=shutil.ignore_patterns("xrerank-manifest.json"))
    return repo


def _served_and_reference(xinference, uid: str, model_dir: Path) -> tuple[list[float], list[float]]:
    from xrerank.client import Reranker
    from xrerank.families import Pair
    from xrerank.weights.modeldir import inspect_model_dir

    with Reranker(xinference.endpoint, uid, api_key=xinference.credentials["api_key"]) as client:
        served = sorted(client.rerank(QUERY, DOCUMENTS), key=lambda r: r.index)
    model = inspect_model_dir(model_dir)
    registration = xinference.admin().registration(xinference.admin().instance(uid).model_name)
    reference = model.family.scores(model.path, [Pair(QUERY, d) for d in DOCUMENTS], registration.max_tokens,
                                    "cpu", None)  # fmt: skip
    return [r.score for r in served], reference


def _deployed(run, admin, xinference, path: Path, family: str) -> dict:
    result, answer = run.json(*admin, "deploy", path)
    assert result.exit_code == 0, result.stderr
    assert answer["family"]["name"] == family
    checks = {c["name"]: c for c in answer["verification"]["checks"]}
    assert checks["matches-in-process"]["passed"], checks["matches-in-process"]
    assert f"the {family} family's own scoring" in checks["matches-in-process"]["detail"]
    uid = answer["model_uid"]
    served, reference = _served_and_reference(xinference, uid, _weights_of(path))
    assert served == pytest.approx(reference, abs=1e-5), (served, reference)
    assert len(set(served)) > 1  # random weights, yet distinct scores: the comparison means something
    return answer


def _weights_of(path: Path) -> Path:
    """Where a deployment file's weights went ($XRERANK_HOME/models/<name> by default)."""
    import os

    from xrerank.deploy.target import load_target

    return load_target(path, Path(os.environ["XRERANK_HOME"])).weights


def _terminate(run, admin, uid: str) -> None:
    assert run(*admin, "terminate", "--model-uid", uid).exit_code == 0


def test_the_shipped_qwen3_config_deploys_down_the_qwen3_path_and_matches_the_yes_no_reference(
    run, admin, xinference, tiny, tmp_path, tmp_path_factory
):
    from fakehub import FakeHub

    with FakeHub({"Qwen/Qwen3-Reranker-0.6B": _as_hub_repo(tiny["qwen3"], tmp_path_factory)}) as hub:
        text = (CONFIGS / "qwen3-reranker-0.6b-cpu.yaml").read_text()
        text = text.replace("  revision: master\n", f"  revision: master\n  hub_endpoint: {hub.url}\n")
        path = tmp_path / "qwen3.yaml"
        path.write_text(text.replace("suite: all", "suite: mechanics"))  # quality needs the real weights
        answer = _deployed(run, admin, xinference, path, "qwen3")
    registration = xinference.admin().registration("Qwen3-Reranker-0.6B-custom")
    assert registration is not None and registration.max_tokens == 1024
    _terminate(run, admin, answer["model_uid"])


def test_the_shipped_ms_marco_config_deploys_from_the_hugging_face_hub_as_a_bert_cross_encoder(
    run, admin, xinference, tiny, tmp_path, tmp_path_factory, monkeypatch
):
    from fakehf import FakeHFHub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline; this test downloads
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with FakeHFHub({"cross-encoder/ms-marco-MiniLM-L6-v2": _as_hub_repo(tiny["bert"], tmp_path_factory)}) as hub:
        text = (CONFIGS / "ms-marco-minilm-l6-v2-cpu.yaml").read_text()
        text = text.replace("  revision: main\n", f"  revision: main\n  hub_endpoint: {hub.url}\n")
        path = tmp_path / "minilm.yaml"
        path.write_text(text.replace("suite: all", "suite: mechanics"))
        answer = _deployed(run, admin, xinference, path, "bert")
    _terminate(run, admin, answer["model_uid"])


def _demo_file(tmp_path: Path, family: str, trust: bool = False) -> Path:
    from xrerank.families import by_name

    name = f"demo-{family}-reranker"
    text = DEMO.read_text().replace("  source: demo ", f"  source: demo\n  model_id: {by_name(family).demo_id} ")
    text = text.replace("model_name: demo-bge-reranker-v2-m3", f"model_name: {name}")
    text = text.replace("model_uid: demo-reranker", f"model_uid: demo-{family}").replace("replica: 2", "replica: 1")
    if trust:
        text = text.replace("  max_tokens: 512", "  max_tokens: 512\n  trust_remote_code: true")
    path = tmp_path / f"{family}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_a_demo_of_each_cross_encoder_family_deploys_and_matches_its_crossencoder(run, admin, xinference, tmp_path,
                                                                                 family):  # fmt: skip
    path = _demo_file(tmp_path, family)
    answer = _deployed(run, admin, xinference, path, family)
    _terminate(run, admin, answer["model_uid"])


def test_a_qwen3_reranker_registered_outside_xrerank_under_another_name_is_caught_by_verify(
    run, admin, xinference, tiny
):
    """The mis-routed case: Xinference serves it as a CrossEncoder, without the prompt; verify's
    reference is the family's own scoring, so the scores disagree and verify fails, naming it."""
    from xrerank.deploy.spec import DEFAULT_LANGUAGES
    from xrerank.xinference.records import LaunchSettings

    server = xinference.admin()
    spec = {"version": 2, "model_name": "misrouted-reranker", "type": "normal", "language": list(DEFAULT_LANGUAGES),
            "max_tokens": 512, "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface",
                                                "model_uri": str(tiny["qwen3"]), "quantization": "none"}]}  # fmt: skip
    server.register(spec, persist=False)
    try:
        server.launch(LaunchSettings("misrouted-reranker", "misrouted", replica=1, device="cpu"), 1)
        import time

        server.wait_until_ready("misrouted", 1, time.monotonic() + 300)
        result, report = run.json(*admin, "verify", "--model-uid", "misrouted", "--suite", "mechanics")
        checks = {c["name"]: c for c in report["checks"]}
        assert result.exit_code == 1 and not checks["matches-in-process"]["passed"], checks
        assert "qwen3 family's own scoring" in checks["matches-in-process"]["detail"]
    finally:
        run(*admin, "terminate", "--model-uid", "misrouted")
        run(*admin, "unregister", "--model-name", "misrouted-reranker")


def test_a_model_that_ships_code_is_refused_without_the_opt_in_and_says_which_files_run(run, admin, tmp_path):
    result = run(*admin, "deploy", _demo_file(tmp_path, "remote-code"))
    assert result.exit_code == 2, result.stderr
    assert "modeling_xrerank.py" in result.stderr and "trust_remote_code: true" in result.stderr


def test_on_a_server_started_without_trust_the_opt_in_fails_in_one_line_that_says_so(run, admin, xinference,
                                                                                     tmp_path):  # fmt: skip
    result = run(*admin, "deploy", _demo_file(tmp_path, "remote-code", trust=True), "--wait", "300")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "XINFERENCE_TRUST_REMOTE_CODE=1" in errors[0], result.stderr
    run(*admin, "terminate", "--model-uid", "demo-remote-code")


def test_up_demo_of_a_model_that_ships_code_starts_a_trusting_server_and_serves_it(tmp_path):
    home = tmp_path / "home"
    user_home = tempfile.mkdtemp(prefix="xr-home-")  # short: xoscar's sockets live under $HOME/.xoscar
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": user_home, "XRERANK_HOME": str(home),
           "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}  # fmt: skip

    def xrerank(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xrerank", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    port = free_port()
    try:
        done = xrerank("up", "--demo", "--family", "remote-code", "--port", port, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        answer = json.loads(done.stdout)
        assert answer["model_uid"] == "demo-remote-code" and len(answer["sample"]) == 3
        assert answer["family"]["name"] == "remote-code" and any(
            f.endswith("modeling_xrerank.py") for f in answer["family"]["runs_code"]
        )
        status = json.loads(xrerank("server", "status", "--json").stdout)
        assert status["trust_remote_code"] is True
    finally:
        assert xrerank("down").stdout.strip() == "stopped"
