"""Generated bad input: a few hundred deployment files and command lines, each either accepted or
refused with exit 2 and one line, never a traceback. Derandomized, so CI sees the same cases."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from conftest import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrerank.cli import cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BASE = yaml.safe_load(CONFIGS.joinpath("demo.yaml").read_text())
FUZZ = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens: an accepted file ends in exit 3

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["../x", "/", "/etc", "/etc/passwd", "~", "$HOME", ".", "a" * 600, "NaN", "0,0", "-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # noqa: E501
paths = st.sampled_from(
    [
        ("version",),
        ("endpoint",),
        ("weights",),
        ("weights", "source"),
        ("weights", "dir"),
        ("weights", "model_id"),
        ("weights", "revision"),
        ("weights", "hub_endpoint"),
        ("registration",),
        ("registration", "model_name"),
        ("registration", "language"),
        ("registration", "max_tokens"),
        ("launch",),
        ("launch", "model_uid"),
        ("launch", "replica"),
        ("launch", "gpu_idx"),
        ("launch", "replicas_per_gpu"),
        ("launch", "device"),
        ("launch", "threads_per_replica"),
        ("launch", "batch_interval"),
        ("launch", "env"),
        ("verify", "suite"),
        ("verify", "cases"),
        ("credentials", "api_key_env"),
        ("nonsense",),
    ]
)


def _runner(env: dict | None = None) -> CliRunner:
    try:
        return CliRunner(mix_stderr=False, env=env)
    except TypeError:  # click >= 8.2 always keeps them apart
        return CliRunner(env=env)


def _mutated(changes: list[tuple[tuple[str, ...], object]]) -> dict:
    import copy

    document = copy.deepcopy(BASE)
    for path, value in changes:
        node = document
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return document


def _assert_clean(result, accepted_codes: tuple[int, ...]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in accepted_codes, (result.exit_code, result.stderr)
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr


@FUZZ
@given(st.lists(st.tuples(paths, values), min_size=1, max_size=4))
def test_generated_deployment_files_are_accepted_or_refused_in_one_line(tmp_path_factory, changes):
    path = tmp_path_factory.mktemp("fuzz") / "deploy.yaml"
    path.write_text(yaml.safe_dump(_mutated(changes), allow_unicode=True))
    result = _runner().invoke(cli, ["--endpoint", CLOSED, "deploy", str(path), "--dry-run"])
    _assert_clean(result, (2, 3))


@FUZZ
@given(st.text(max_size=400))
def test_generated_text_as_a_deployment_file_is_refused_in_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "deploy.yaml"
    path.write_text(text)
    result = _runner().invoke(cli, ["--endpoint", CLOSED, "deploy", str(path), "--dry-run"])
    _assert_clean(result, (2, 3))


words = st.sampled_from(
    ["--endpoint", CLOSED, "127.0.0.1:1", "ftp://x", "--replica", "0", "-3", "2", "--gpu-idx", "0,0", "0,x", ",",
     "--model-name", "--model-uid", "../x", "a b", "x" * 300, "--top-n", "1.5", "--threads", "--batch-interval",
     "nan", "--docs", "0", "--concurrency", "--duration", "--wait", "--timeout", "--port", "70000", "--host",
     "0.0.0.0", "300.1.1.1", "--no-auth", "--json", "--docs-file", "/nonexistent", "--max-tokens", "--hub", "cvs"]
)  # fmt: skip
commands = st.sampled_from(
    [["launch"], ["rerank", "q"], ["bench"], ["status"], ["terminate"], ["unregister"], ["spec"], ["register"],
     ["server", "status"], ["download", "a/b"], ["verify"], ["up"], ["connect"], ["keys", "create"], ["scale"]]
)  # fmt: skip


@FUZZ
@given(commands, st.lists(words, max_size=8))
def test_generated_command_lines_never_end_in_a_traceback(tmp_path_factory, command, args):
    home = tmp_path_factory.mktemp("home")
    env = {"XRERANK_HOME": str(home), "XRERANK_ENDPOINT": CLOSED, "MODELSCOPE_ENDPOINT": CLOSED, "HF_ENDPOINT": CLOSED}
    result = _runner(env).invoke(cli, [*command, *args])
    # 0 is possible (e.g. `xrerank --help` forms); a usage error is Click's own exit 2 with "Error:".
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2, 3, 4), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
