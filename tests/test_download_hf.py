"""`xrerank download --hub huggingface` with the real huggingface_hub client against a local fake Hub."""

from __future__ import annotations

import pytest
from conftest import DEMO_REPO, free_port
from fakehf import COMMIT, FakeHFHub

from xrerank.weights.modeldir import MANIFEST, read_complete_manifest, sha256_of


@pytest.fixture(autouse=True)
def online(monkeypatch, tmp_path):
    """The suite runs with HF_HUB_OFFLINE=1 (read when huggingface_hub is imported); these tests download."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture
def hf_hub(hub_repo):
    with FakeHFHub({DEMO_REPO: hub_repo}) as hub:
        yield hub


def _download(run, hub_url: str, target, *more: str):
    return run.json("download", DEMO_REPO, "--hub", "huggingface", "--local-dir", target, "--hub-endpoint", hub_url,
                    *more)  # fmt: skip


def test_download_checks_every_hash_and_writes_a_manifest(run, hf_hub, hub_repo, tmp_path):
    target = tmp_path / "weights"
    result, document = _download(run, hf_hub.url, target)
    assert result.exit_code == 0, result.stderr
    assert (document["source"], document["revision"], document["model_id"]) == ("huggingface", "main", DEMO_REPO)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert document["files"][name]["sha256"] == sha256_of(hub_repo / name)
    assert not any(name.startswith(".cache") for name in document["files"])  # the client's records are not the model
    assert f"/api/models/{DEMO_REPO}/revision/main" in {path for _, path, _ in hf_hub.requests}


def test_a_complete_directory_is_a_no_op(run, hf_hub, tmp_path):
    target = tmp_path / "weights"
    assert _download(run, hf_hub.url, target)[0].exit_code == 0
    hf_hub.requests.clear()
    result, document = _download(run, hf_hub.url, target)
    assert result.exit_code == 0 and document["changed"] is False and hf_hub.requests == []


def test_a_commit_pins_the_revision(run, hf_hub, tmp_path):
    result, document = _download(run, hf_hub.url, tmp_path / "weights", "--revision", COMMIT)
    assert result.exit_code == 0, result.stderr
    assert document["revision"] == COMMIT
    result = run("download", DEMO_REPO, "--hub", "huggingface", "--local-dir", tmp_path / "w2", "--hub-endpoint",
                 hf_hub.url, "--revision", "f" * 40)  # fmt: skip
    assert result.exit_code == 1 and "has no revision" in result.stderr


def test_an_unknown_model_is_one_line_and_exit_1(run, hf_hub, tmp_path):
    result = run("download", "nobody/nothing", "--hub", "huggingface", "--local-dir", tmp_path / "w",
                 "--hub-endpoint", hf_hub.url)  # fmt: skip
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert read_complete_manifest(tmp_path / "w") is None


def test_an_unreachable_hub_is_exit_3_and_points_to_the_demo(run, tmp_path):
    result = run("download", DEMO_REPO, "--hub", "huggingface", "--local-dir", tmp_path / "w", "--hub-endpoint",
                 f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert result.exit_code == 3 and "cannot reach the model hub" in result.stderr and "--demo" in result.stderr


def test_a_corrupted_file_is_caught_deleted_and_fetched_again_by_the_next_run(run, hub_repo, tmp_path):
    target = tmp_path / "weights"
    with FakeHFHub({DEMO_REPO: hub_repo}, corrupt={"model.safetensors"}) as hub:
        result = run("download", DEMO_REPO, "--hub", "huggingface", "--local-dir", target, "--hub-endpoint", hub.url)
    # huggingface_hub itself accepts it (it checks sizes only): xrerank's own hash check refuses it.
    assert result.exit_code == 1 and "model.safetensors has sha256" in result.stderr
    assert not (target / "model.safetensors").exists() and read_complete_manifest(target) is None
    assert run("spec", "--model-dir", target, "--model-name", "custom-x").exit_code == 2
    with FakeHFHub({DEMO_REPO: hub_repo}) as hub:
        result, document = _download(run, hub.url, target)
    assert result.exit_code == 0, result.stderr
    assert sha256_of(target / "model.safetensors") == sha256_of(hub_repo / "model.safetensors")
    assert hub.downloaded() == ["model.safetensors"]  # the good files were not fetched again


def test_an_interrupted_transfer_resumes_from_where_it_stopped(run, hub_repo, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # The client keeps partial bytes in 10 MiB steps; the demo model is smaller than that.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    target = tmp_path / "weights"
    with FakeHFHub({DEMO_REPO: hub_repo}, cut_once={"model.safetensors"}) as hub:
        result = run("download", DEMO_REPO, "--hub", "huggingface", "--local-dir", target, "--hub-endpoint", hub.url)
        assert result.exit_code == 1 and "was interrupted, run it again to resume" in result.stderr
        assert (target / ".xrerank-download-in-progress").exists() and not (target / MANIFEST).exists()
        hub.requests.clear()
        result, _ = _download(run, hub.url, target)
        assert result.exit_code == 0, result.stderr
        ranges = [byte_range for method, path, byte_range in hub.requests if path.endswith("model.safetensors")
                  and method == "GET"]  # fmt: skip
    assert ranges and ranges[0] is not None and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-"
    assert sha256_of(target / "model.safetensors") == sha256_of(hub_repo / "model.safetensors")


def test_the_config_alone_is_fetched_to_size_a_deployment(hf_hub):
    from xrerank.weights import source_for

    config = source_for("huggingface").fetch_config(DEMO_REPO, "main", hf_hub.url)
    assert config["architectures"] == ["XLMRobertaForSequenceClassification"]
    assert hf_hub.downloaded() == ["config.json"]


def test_offline_mode_is_respected_with_one_line(run, hf_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = run("download", DEMO_REPO, "--hub", "huggingface", "--local-dir", tmp_path / "w", "--hub-endpoint",
                 hf_hub.url)  # fmt: skip
    assert result.exit_code == 2 and "HF_HUB_OFFLINE" in result.stderr and hf_hub.requests == []
