"""The CI recipes of docs/ci, run the way their CI systems run them, on this machine.

GitHub Actions: each `run:` step in its own `bash -eo pipefail`, in order; after a failure only the
steps marked `if: always()` or `if: failure()`; variables a step appends to $GITHUB_ENV reach the
steps after it; `::add-mask::` lines are the runner's and never shown. GitLab CI: `script:` in one
shell that stops at the first failing line, then `after_script:` in a shell of its own, always.
The runner's own actions are played by this file: checkout and setup-python do nothing (the
checkout is here and this Python runs), `actions/cache` and GitLab's `cache:` restore their paths
before the job and save them after a job that passed, and the log upload (`upload-artifact`,
`artifacts: when: on_failure`) is checked to find its file. The install step is not run: it would
download torch and Xinference, which this environment has installed already (scripts/install.sh).

The recipes run unchanged, with their two settings given as a user would: XRERANK_DEPLOYMENT (the
demo model from a fake ModelScope hub, so that a download can be seen or not) and APP_TESTS (a
small app that ranks three documents through the key it was handed, or `false`, a failing app).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import DEMO_REPO, free_port

pytestmark = pytest.mark.e2e
RECIPES = Path(__file__).resolve().parent.parent / "docs" / "ci"
APP = """\
import json, os, sys
from xrerank.client import Reranker

documents = ["AI is the study of intelligent machines.", "Apples are rich in fibre.", "Paris is in France."]
reranker = Reranker(os.environ["XRERANK_ENDPOINT"], os.environ["XRERANK_MODEL_UID"],
                    api_key=os.environ["XRERANK_API_KEY"])
results = reranker.rerank("What is AI?", documents)
json.dump({"ranked": [r.index for r in results], "key": os.environ["XRERANK_API_KEY"]}, open(sys.argv[1], "w"))
print("the app ranked", len(results), "documents")
"""


@dataclass
class Job:
    """What one run of a recipe left: its log as shown, whether it passed, and what it started."""

    passed: bool
    log: str
    steps: list[str] = field(default_factory=list)
    server_pid: int | None = None
    uploaded: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@pytest.fixture
def project(tmp_path, fake_hub):
    """A checkout: the deployment file (the demo model from the hub, one replica) and the app."""
    workspace = tmp_path / "workspace"
    (workspace / "configs").mkdir(parents=True)
    (workspace / "configs" / "reranker.yaml").write_text(
        "version: 1\n"
        f"weights: {{source: modelscope, model_id: {DEMO_REPO}}}\n"
        "registration: {model_name: ci-bge-reranker, max_tokens: 512}\n"
        "launch: {model_uid: ci-reranker, replica: 1, device: cpu}\n"
        "verify: {suite: mechanics}\n"
    )
    (workspace / "app.py").write_text(APP)
    return workspace


def _environment(fake_hub, workspace: Path, app_tests: str) -> dict:
    """The runner's environment: this Python's scripts first on PATH (what the install step gives)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("XRERANK_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        MODELSCOPE_ENDPOINT=fake_hub.url,
        XRERANK_PORT=str(free_port()),  # a shared runner's 9997 may be taken
        HOME=tempfile.mkdtemp(prefix="xr-ci-"),  # short: xoscar's sockets live under $HOME/.xoscar
    )
    env["APP_TESTS"] = app_tests
    return env


def _settings(variables: dict, workspace: Path, app_tests: str) -> dict:
    values = {**variables, "XRERANK_DEPLOYMENT": "configs/reranker.yaml", "APP_TESTS": app_tests}
    return {key: _expand(str(value), workspace) for key, value in values.items()}


def _expand(text: str, workspace: Path) -> str:
    return text.replace("${{ github.workspace }}", str(workspace)).replace("$CI_PROJECT_DIR", str(workspace))


def _restore(cache: Path, workspace: Path, paths: list[str]) -> None:
    for path in paths:
        if (cache / path).exists():
            shutil.copytree(cache / path, workspace / path, dirs_exist_ok=True)


def _save(cache: Path, workspace: Path, paths: list[str]) -> None:
    for path in paths:
        if (workspace / path).exists():
            shutil.copytree(workspace / path, cache / path, dirs_exist_ok=True)


def _shell(script: str, workspace: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def _server_pid(env: dict) -> int | None:
    state = Path(env["XRERANK_HOME"]) / "server" / "server.json"
    return json.loads(state.read_text())["pid"] if state.exists() else None


def run_github(workspace: Path, cache: Path, env: dict, app_tests: str) -> Job:
    started = time.monotonic()
    job = yaml.safe_load((RECIPES / "github-actions.yml").read_text())["jobs"]["test"]
    env = {**env, **_settings(job["env"], workspace, app_tests)}
    github_env, temp = workspace.parent / "github_env", workspace.parent / "runner-temp"
    github_env.write_text("")
    temp.mkdir(exist_ok=True)
    env.update(GITHUB_ENV=str(github_env), RUNNER_TEMP=str(temp), GITHUB_RUN_ID="4242", GITHUB_RUN_ATTEMPT="1")
    cached = next(s["with"]["path"].split() for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    _restore(cache, workspace, cached)
    outcome = Job(passed=True, log="")
    for step in job["steps"]:
        condition = step.get("if", "success()")
        if condition not in (("always()", "failure()") if not outcome.passed else ("always()", "success()")):
            continue
        outcome.steps.append(step.get("name") or step.get("uses"))
        if "uses" in step:
            if step["uses"].startswith("actions/upload-artifact@"):
                outcome.uploaded.append(workspace / step["with"]["path"])
            continue  # checkout, setup-python, cache: see the module's docstring
        if step.get("id") == "install":
            continue
        carried = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
        done = _shell(step["run"], workspace, {**env, **carried})
        shown = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if "::add-mask::" not in line)
        outcome.log += f"--- {step.get('name')}\n{shown}\n"
        outcome.server_pid = outcome.server_pid or _server_pid(env)
        outcome.passed = outcome.passed and done.returncode == 0
    if outcome.passed:
        _save(cache, workspace, cached)
    outcome.seconds = time.monotonic() - started
    print(f"github-actions.yml ran in {outcome.seconds:.1f} s ({'passed' if outcome.passed else 'failed'})")
    return outcome


def run_gitlab(workspace: Path, cache: Path, env: dict, app_tests: str) -> Job:
    started = time.monotonic()
    job = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())["rerank-tests"]
    env = {**env, **_settings(job["variables"], workspace, app_tests), "CI_JOB_ID": "4242"}
    env["CI_PROJECT_DIR"] = str(workspace)
    _restore(cache, workspace, job["cache"]["paths"])
    # before_script is the install: see the module's docstring. GitLab echoes each line before it runs it.
    script = "\n".join(f"echo {json.dumps('$ ' + line)}\n{line}" for line in job["script"])
    done = _shell(script, workspace, env)
    outcome = Job(passed=done.returncode == 0, log=done.stdout + done.stderr, steps=["script"])
    outcome.server_pid = _server_pid(env)
    after = _shell("\n".join(job["after_script"]), workspace, env)
    outcome.log += after.stdout + after.stderr
    outcome.steps.append("after_script")
    if not outcome.passed and job["artifacts"]["when"] == "on_failure":
        outcome.uploaded += [workspace / path for path in job["artifacts"]["paths"]]
    if outcome.passed:
        _save(cache, workspace, job["cache"]["paths"])
    outcome.seconds = time.monotonic() - started
    print(f"gitlab-ci.yml ran in {outcome.seconds:.1f} s ({'passed' if outcome.passed else 'failed'})")
    return outcome


def _left_nothing(job: Job, env: dict) -> None:
    assert job.server_pid is not None, job.log[-2000:]
    process_gone = not psutil.pid_exists(job.server_pid) or psutil.Process(job.server_pid).status() == "zombie"
    assert process_gone, f"the server (pid {job.server_pid}) still runs"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(env["XRERANK_PORT"]))) != 0, "the port still answers"


def _secrets(workspace: Path) -> list[str]:
    stored = json.loads((workspace / ".xrerank" / "server" / "credentials.json").read_text())
    return [stored["password"], stored["api_key"]]


def test_the_recipes_rank_keep_the_key_out_of_the_log_and_clean_up_with_a_warm_cache(project, tmp_path, fake_hub):
    """GitHub Actions on a cold cache with the app passing; then GitLab on a fresh checkout with the cache
    restored (both keep the weights in .xrerank-models) and the app's tests failing."""
    cache = tmp_path / "cache"
    env = _environment(fake_hub, project, "")
    before = len(fake_hub.ranges)
    github = run_github(project, cache, env, f"python app.py {tmp_path / 'ranked.json'}")
    assert github.passed, github.log[-3000:]
    app = json.loads((tmp_path / "ranked.json").read_text())
    assert sorted(app["ranked"]) == [0, 1, 2]  # ranked, through the key it was handed
    assert not [secret for secret in [app["key"], *_secrets(project)] if secret in github.log]
    assert "stop the reranker" in github.steps and "keep the server's log when a step failed" not in github.steps
    _left_nothing(github, env)
    assert len(fake_hub.ranges) > before and (cache / ".xrerank-models" / "ci-bge-reranker").is_dir()

    # The next pipeline: a fresh checkout and runner, the cache restored, the app's tests failing.
    again = tmp_path / "again" / "workspace"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns(".xrerank*", ".pip-cache"))
    (again / "app.py").write_text(APP + "\nsys.exit(1)\n")  # ranks, then its tests fail
    env = _environment(fake_hub, again, "")
    before = len(fake_hub.ranges)
    gitlab = run_gitlab(again, cache, env, f"python app.py {tmp_path / 'ranked-again.json'}")
    assert not gitlab.passed and len(fake_hub.ranges) == before, "the restored weights were downloaded again"
    assert (tmp_path / "ranked-again.json").exists(), gitlab.log[-3000:]  # it failed in the app, not before
    app = json.loads((tmp_path / "ranked-again.json").read_text())
    assert sorted(app["ranked"]) == [0, 1, 2]
    assert not [secret for secret in [app["key"], *_secrets(again)] if secret in gitlab.log]
    assert not (again / ".xrerank.env").exists()
    assert re.search(r"^\$ xrerank up ", gitlab.log, re.MULTILINE)  # the job's log, as GitLab shows it
    assert [path.is_file() for path in gitlab.uploaded] == [True]  # the server's log, kept for the failure
    _left_nothing(gitlab, env)
