"""`xrerank download` with the real modelscope client against a local fake hub."""

from conftest import DEMO_REPO, free_port
from fakehub import FakeHub

from xrerank.weights.modeldir import MANIFEST, read_complete_manifest, sha256_of


def test_download_verifies_and_writes_a_manifest(run, fake_hub, hub_repo, tmp_path):
    target = tmp_path / "weights"
    result, document = run.json("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", fake_hub.url)
    assert result.exit_code == 0, result.stderr
    assert document["changed"] is True and document["model_id"] == DEMO_REPO
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert document["files"][name]["sha256"] == sha256_of(hub_repo / name)
        assert sha256_of(target / name) == sha256_of(hub_repo / name)


def test_a_complete_directory_is_a_no_op(run, fake_hub, tmp_path):
    target = tmp_path / "weights"
    assert run("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", fake_hub.url).exit_code == 0
    fake_hub.requests.clear()
    result, document = run.json("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", fake_hub.url)
    assert result.exit_code == 0 and document["changed"] is False
    assert fake_hub.requests == []


def test_unknown_model_is_one_line_and_exit_1(run, fake_hub, tmp_path):
    result = run("download", "nobody/nothing", "--local-dir", tmp_path / "w", "--hub-endpoint", fake_hub.url)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert read_complete_manifest(tmp_path / "w") is None


def test_unreachable_hub_is_exit_3_and_points_to_the_demo(run, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = run("download", DEMO_REPO, "--local-dir", tmp_path / "w", "--hub-endpoint", endpoint)
    assert result.exit_code == 3
    assert "cannot reach the model hub" in result.stderr and "--demo" in result.stderr


def test_a_hub_endpoint_without_scheme_is_bad_input(run, tmp_path):
    result = run("download", DEMO_REPO, "--local-dir", tmp_path / "w", "--hub-endpoint", "127.0.0.1:1")
    assert result.exit_code == 2 and "needs a scheme" in result.stderr


def test_a_corrupted_file_fails_and_leaves_nothing_that_looks_complete(run, hub_repo, tmp_path):
    target = tmp_path / "weights"
    with FakeHub({DEMO_REPO: hub_repo}, corrupt={"model.safetensors"}) as hub:
        result = run("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", hub.url)
    assert result.exit_code == 1
    assert "model.safetensors" in result.stderr
    assert not (target / MANIFEST).exists() and read_complete_manifest(target) is None
    refused = run("spec", "--model-dir", target, "--model-name", "custom-x")
    assert refused.exit_code == 2
    # Once the hub serves the right bytes, the same command completes the directory.
    with FakeHub({DEMO_REPO: hub_repo}) as hub:
        result = run("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", hub.url)
    assert result.exit_code == 0, result.stderr
    assert read_complete_manifest(target) is not None
    assert sha256_of(target / "model.safetensors") == sha256_of(hub_repo / "model.safetensors")


def test_an_interrupted_download_resumes_from_its_incomplete_file_with_a_range_request(run, hub_repo, tmp_path):
    target = tmp_path / "weights"
    with FakeHub({DEMO_REPO: hub_repo}, cut_once={"model.safetensors"}) as hub:
        result = run("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", hub.url)
        assert result.exit_code == 1 and "run it again to resume" in result.stderr
        assert read_complete_manifest(target) is None
        result = run("download", DEMO_REPO, "--local-dir", target, "--hub-endpoint", hub.url)
        assert result.exit_code == 0, result.stderr
        resumed = [byte_range for name, byte_range in hub.ranges if name == "model.safetensors"][-1]
    assert resumed is not None and resumed.startswith("bytes=") and resumed != "bytes=0-"
    assert sha256_of(target / "model.safetensors") == sha256_of(hub_repo / "model.safetensors")
