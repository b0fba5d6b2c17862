"""Shared test fixtures: an isolated environment, the demo model, a fake hub, one real server.

The server is a real `xinference-local` with auth on (4.1's default), started once per session
through xrerank's own `local.start` on a free loopback port, and stopped by its pid at the end.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

# Read by modelscope at import time: fail fast instead of retrying for a minute.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",
        "MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS": "1",
        "MODELSCOPE_REPO_TREE_PAGE_TIMEOUT_SECONDS": "2",
        "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "0",
    }
)
_STRAY = (
    "XRERANK_ENDPOINT",
    "XINFERENCE_ENDPOINT",
    "XRERANK_API_KEY",
    "XRERANK_USERNAME",
    "XRERANK_PASSWORD",
    "XRERANK_TIMEOUT",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_API_TOKEN",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "XRERANK_SOURCE_ADDRESS",
    "XRERANK_PORT",
    "XRERANK_MODELS",
)
DEMO_REPO = "xrerank-tests/tiny-bge-reranker-v2-m3"
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"  # the demo deployment file


def pytest_collection_modifyitems(items):
    """Longest files first: the cluster's (~5 min), the reranker families' (~5 min) and the CI recipes'
    (~3 min), then the others that start servers.

    scripts/test.sh runs two processes, a whole file to each in this order (--dist loadfile
    --no-loadscope-reorder), so the cluster's file runs beside the rest. Within a file the order is kept."""

    def rank(item) -> int:
        if "cluster" in item.fixturenames or item.path.name in ("test_e2e_ci.py", "test_e2e_families.py"):
            return 0
        return 1 if {"xinference", "open_server", "open_host", "installed_wheel"} & set(item.fixturenames) else 2

    file_rank: dict[Path, int] = {}
    for item in items:
        file_rank[item.path] = min(file_rank.get(item.path, 2), rank(item))
    items.sort(key=lambda item: file_rank[item.path])


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No test touches the user's home, caches or credentials."""
    for name in _STRAY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XRERANK_HOME", str(tmp_path / "xrerank-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    import sys

    if "modelscope_hub.config" in sys.modules:  # the client caches its settings per process
        sys.modules["modelscope_hub.config"].set_default_config(None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Every CLI run of this test process, for the secret scan: (args, stdout, stderr, asked for a key).
OUTPUTS: list[tuple[tuple[str, ...], str, str, bool]] = []
SESSION_SERVER: dict[str, Server] = {}
_KEY_FORMATS = ("env", "dotenv", "dify", "ragflow")  # connect's formats made to hold a key


def _asks_for_a_key(args: tuple[str, ...]) -> bool:
    if "keys" in args and "create" in args:
        return True
    if "connect" not in args:
        return False
    chosen = args[args.index("--format") + 1] if "--format" in args[:-1] else "text"
    return "--show-key" in args or chosen in _KEY_FORMATS


class Cli:
    """Runs xrerank in-process with stdout and stderr apart; every run is kept for the secret scan."""

    def __init__(self) -> None:
        try:
            self._runner = CliRunner(mix_stderr=False)
        except TypeError:  # click >= 8.2 always keeps them apart
            self._runner = CliRunner()

    def __call__(self, *args: str, input: str | bytes | None = None):
        from xrerank.cli import cli

        args = tuple(str(a) for a in args)
        result = self._runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        OUTPUTS.append((args, result.stdout, result.stderr, _asks_for_a_key(args)))
        return result

    def json(self, *args: str, input: str | bytes | None = None):
        result = self(*args, "--json", input=input)
        try:
            return result, json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"exit {result.exit_code}, no JSON on stdout; stderr: {result.stderr}") from None


@pytest.fixture(scope="module")
def home(request, tmp_path_factory) -> Path:
    """One XRERANK_HOME for a test file: its tests share the launch records and keys xrerank keeps."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_e2e_") + "-home")


@pytest.fixture
def in_home(home, monkeypatch) -> Path:
    monkeypatch.setenv("XRERANK_HOME", str(home))
    return home


@pytest.fixture
def admin(xinference, in_home) -> list[str]:
    """The shared server's admin arguments, with the test file's XRERANK_HOME."""
    return xinference.admin_args


@pytest.fixture
def run() -> Cli:
    return Cli()


@pytest.fixture(autouse=True, scope="module")
def no_secret_in_any_output():
    """After each test file: no key or password of the shared server in any output that did not ask for
    one (never on stderr), nor in the server's logs."""
    start = len(OUTPUTS)
    yield
    server = SESSION_SERVER.get("server")
    if server is None or len(OUTPUTS) == start:
        return
    secrets = server.secrets()
    for args, stdout, stderr, asked in OUTPUTS[start:]:
        for secret in secrets:
            assert secret not in stderr, f"a secret on stderr of xrerank {' '.join(args)}"
            assert asked or secret not in stdout, f"a secret on stdout of xrerank {' '.join(args)}"
    for log in [server.directory / "xinference.log", *(server.directory / "home" / "logs").glob("*.log")]:
        text = log.read_text(errors="replace")
        assert not [secret for secret in secrets if secret in text], f"a secret in {log}"


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """xrerank built as a wheel from this checkout, as `pip wheel .` builds it."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    build = tmp_path_factory.mktemp("wheel")
    # From a copy of what git would commit: a build/ left in the checkout by an earlier build would
    # put modules that no longer exist into the wheel.
    source = build / "source"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (repo / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(build), str(source)], check=True)  # fmt: skip
    return next(build.glob("xrerank-*.whl"))


@pytest.fixture(scope="session")
def installed_wheel(built_wheel, tmp_path_factory) -> Path:
    """xrerank built as a wheel and installed, without -e, into a fresh virtualenv outside the checkout.

    Its third-party packages come from this environment (a .pth line: no download), so only
    xrerank's own files are the wheel's; the console scripts are written as pip writes them."""
    import subprocess
    import sys
    import sysconfig

    wheel, build = built_wheel, tmp_path_factory.mktemp("installed")
    venv = build / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = Path(
        subprocess.check_output(
            [str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"], text=True
        ).strip()
    )  # noqa: E501
    (site / "zz-third-party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True)  # fmt: skip
    for script in ("xinference-local",):  # the server's entry point, as its own wheel would install it
        source = Path(sys.executable).with_name(script).read_text().splitlines()
        (venv / "bin" / script).write_text("\n".join([f"#!{venv / 'bin' / 'python'}", *source[1:]]) + "\n")
        (venv / "bin" / script).chmod(0o755)
    imported = subprocess.check_output([str(venv / "bin" / "python"), "-c", "import xrerank; print(xrerank.__file__)"],
                                       text=True, cwd=build)  # fmt: skip
    assert imported.startswith(str(site)), f"xrerank came from {imported}, not the wheel"
    return venv


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    from xrerank.weights.generated import make_demo_model

    return make_demo_model(tmp_path_factory.mktemp("weights") / "tiny-bge-reranker-v2-m3")


@pytest.fixture(scope="session")
def hub_repo(demo_model, tmp_path_factory) -> Path:
    """The demo model as a hub repository: its files without xrerank's manifest."""
    import shutil

    repo = tmp_path_factory.mktemp("hub") / "repo"
    shutil.copytree(demo_model, repo, ignore=shutil.ignore_patterns("xrerank-manifest.json"))
    (repo / "README.md").write_text("# tiny bge-reranker-v2-m3 for tests\n")
    return repo


@pytest.fixture(scope="session")
def fake_hub(hub_repo):
    from fakehub import FakeHub

    with FakeHub({DEMO_REPO: hub_repo}) as hub:
        yield hub


class Server:
    def __init__(self, endpoint: str, credentials: dict, directory: Path) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self.directory = directory

    @property
    def admin_args(self) -> list[str]:
        return [
            "--endpoint",
            self.endpoint,
            "--username",
            self.credentials["username"],
            "--password",
            self.credentials["password"],
        ]

    @property
    def key_args(self) -> list[str]:
        return ["--endpoint", self.endpoint, "--api-key", self.credentials["api_key"]]

    def admin(self):
        from xrerank.client.http import Credentials
        from xrerank.xinference.server import Xinference

        c = self.credentials
        return Xinference(self.endpoint, Credentials(username=c["username"], password=c["password"]))

    def secrets(self) -> set[str]:
        """The admin password and every key on the server (each revealed by the admin)."""
        server = self.admin()
        return {self.credentials["password"], *(server.reveal_key(key.id) for key in server.api_keys())}

    def audit(self, after: float = 0.0) -> list[dict]:
        """The server's own audit log (one entry per authenticated request), from the epoch time `after`."""
        from datetime import datetime, timezone

        def when(entry: dict) -> float:
            moment = datetime.strptime(entry["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
            return moment.replace(tzinfo=timezone.utc).timestamp()

        path = self.directory / "home" / "logs" / "audit.log"
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [entry for entry in entries if when(entry) >= after]


@pytest.fixture(scope="session")
def xinference(tmp_path_factory) -> Server:
    from xrerank.xinference import local

    directory = tmp_path_factory.mktemp("xinference")
    server, started = local.start(directory, port=free_port(), auth=True, timeout=240)
    assert started
    try:
        credentials = json.loads((directory / local.CREDENTIALS_FILE).read_text())
        SESSION_SERVER["server"] = Server(server.endpoint, credentials, directory)
        yield SESSION_SERVER["server"]
    finally:
        local.stop(directory)
