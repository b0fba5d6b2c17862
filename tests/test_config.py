from pathlib import Path

import pytest

from xrerank.deploy.config import load_deployment, weights_dir
from xrerank.errors import BadInput

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEMO_TEXT = (CONFIGS / "demo.yaml").read_text()
VALID = """\
version: 1
weights:
  source: demo
registration:
  model_name: demo-x
  max_tokens: 512
launch:
  replica: 2
  device: cpu
"""


def _write(tmp_path, text):
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    return path


def test_shipped_demo_config():
    deployment, _ = load_deployment(CONFIGS / "demo.yaml")
    assert (deployment.weights.source, deployment.launch.replica, deployment.launch.device) == ("demo", 2, "cpu")
    assert deployment.verify.suite == "mechanics"


def test_shipped_cpu_config():
    deployment, _ = load_deployment(CONFIGS / "bge-reranker-v2-m3-cpu.yaml")
    assert deployment.weights.model_id == "AI-ModelScope/bge-reranker-v2-m3"
    assert (deployment.launch.device, deployment.launch.use_fp16) == ("cpu", False)


def test_shipped_gpu_config():
    deployment, _ = load_deployment(CONFIGS / "bge-reranker-v2-m3-gpu.yaml")
    launch = deployment.launch
    assert (launch.replica, launch.gpu_idx, launch.use_fp16) == (2, [0, 1], True)
    assert deployment.registration.max_tokens == 1024


@pytest.mark.parametrize(
    "change, message",
    [
        (("  device: cpu\n", "  device: cpu\n  bogus: 1\n"), r"deploy.yaml:10: launch.bogus: unknown key"),
        (("  max_tokens: 512\n", "  max_tokens: '512'\n"), r"deploy.yaml:6: registration.max_tokens: .*integer"),
        (("  replica: 2\n", "  replica: 0\n"), r"deploy.yaml:8: launch.replica: .*greater than or equal to 1"),
        (("  replica: 2\n", "  replica: -1\n"), r"deploy.yaml:8: launch.replica"),
        (("  device: cpu\n", "  device: tpu\n"), r"deploy.yaml:9: launch.device: .*'cpu', 'cuda' or 'auto'"),
        (("version: 1\n", "version: 7\n"), r"version 7 is not supported"),
        (("  source: demo\n", "  source: modelscope\n"), r"deploy.yaml:2: weights: .*needs model_id"),
        (("registration:\n  model_name: demo-x\n", "registration:\n"), r"registration.model_name: required"),
        (("  replica: 2\n", "  replica: 100000\n"), r"deploy.yaml:8: launch.replica: .*less than or equal to 256"),
        # The launch's own rules live in the schema: a file that loads is one that launches (tune relies on it).
        (("  device: cpu\n", "  device: cpu\n  use_fp16: true\n"), r"deploy.yaml:7: launch: fp16 on CPU"),
        (("  device: cpu\n", "  gpu_idx: [0, 1]\n  n_gpu: 1\n"), r"deploy.yaml:7: launch: give either GPU indexes"),
        (("  device: cpu\n", "  gpu_idx: [0, 1, 2]\n"), r"deploy.yaml:7: launch: 3 GPU indexes cannot be shared"),
    ],
)
def test_wrong_files_name_the_line_and_the_key(tmp_path, change, message):
    assert change[0] in VALID
    with pytest.raises(BadInput, match=message):
        load_deployment(_write(tmp_path, VALID.replace(*change)))


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(BadInput, match=r"deploy.yaml:3: not valid YAML"):
        load_deployment(_write(tmp_path, "version: 1\nweights:\n  source: demo: x\n"))


def test_not_a_mapping(tmp_path):
    with pytest.raises(BadInput, match="YAML mapping"):
        load_deployment(_write(tmp_path, "- a\n- b\n"))


def test_relative_weights_dir_starts_at_the_file(tmp_path):
    deployment, base = load_deployment(
        _write(tmp_path, VALID.replace("  source: demo\n", "  source: demo\n  dir: w\n"))
    )
    assert weights_dir(deployment, base, Path("/home")) == tmp_path / "w"


def test_default_weights_dir_is_under_xrerank_home(tmp_path):
    deployment, base = load_deployment(_write(tmp_path, VALID))
    assert weights_dir(deployment, base, Path("/h")) == Path("/h/models/demo-x")


def test_xrerank_models_moves_the_default_weights_dir_where_a_ci_cache_restores_it(tmp_path, monkeypatch):
    deployment, base = load_deployment(_write(tmp_path, VALID))
    monkeypatch.setenv("XRERANK_MODELS", str(tmp_path / "cached"))
    assert weights_dir(deployment, base, Path("/h")) == tmp_path / "cached" / "demo-x"
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XRERANK_MODELS", str(tmp_path / "a-file"))
    with pytest.raises(BadInput, match="XRERANK_MODELS=.* is a file"):
        weights_dir(deployment, base, Path("/h"))
    monkeypatch.setenv("XRERANK_MODELS", "")  # set but empty: the default
    assert weights_dir(deployment, base, Path("/h")) == Path("/h/models/demo-x")


def test_shipped_hugging_face_config():
    deployment, _ = load_deployment(CONFIGS / "bge-reranker-v2-m3-hf.yaml")
    weights = deployment.weights
    assert (weights.source, weights.model_id, weights.revision) == ("huggingface", "BAAI/bge-reranker-v2-m3", "main")


def test_replicas_per_gpu_sets_the_replica_count_and_repeats_each_gpu():
    from xrerank.deploy.target import resolve

    text = (CONFIGS / "bge-reranker-v2-m3-gpu.yaml").read_text()
    deployment, base = _load_text(
        text.replace("  replica: 2\n", "").replace("  # replicas_per_gpu: 2", "  replicas_per_gpu: 2")
    )
    assert deployment.launch.replica == 4
    assert resolve(deployment, base, Path("/h")).settings.gpu_idx == (0, 0, 1, 1)


@pytest.mark.parametrize(
    "launch, message",
    [
        ("replicas_per_gpu: 2", "replicas_per_gpu needs gpu_idx"),
        ("{replicas_per_gpu: 2, gpu_idx: [0, 0]}", "list each GPU once"),
        ("{replicas_per_gpu: 2, gpu_idx: [0, 1], replica: 3}", "replica 3 contradicts 2 GPU"),
    ],
)
def test_replicas_per_gpu_that_cannot_hold_is_refused(tmp_path, launch, message):
    text = f"version: 1\nweights: {{source: demo}}\nregistration: {{model_name: x}}\nlaunch: {launch}\n"
    if not launch.startswith("{"):
        text = f"version: 1\nweights: {{source: demo}}\nregistration: {{model_name: x}}\nlaunch:\n  {launch}\n"
    with pytest.raises(BadInput, match=message):
        load_deployment(_write(tmp_path, text))


def _load_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "d.yaml"
        path.write_text(text)
        return load_deployment(path)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_its_name_meets_its_familys_routing_rule(path):
    from xrerank.families import check_name, families

    deployment, _ = load_deployment(path)
    model_id = deployment.weights.model_id or "xrerank/demo-bge-reranker-v2-m3"
    family = next(f for f in families() if model_id in f.examples or model_id.split("/")[-1] in
                  {e.split("/")[-1] for e in f.examples} or model_id == f.demo_id)  # fmt: skip
    check_name(family, deployment.registration.model_name)


def test_a_demo_source_takes_only_a_demo_model_id(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(DEMO_TEXT.replace("  source: demo ", "  source: demo\n  model_id: Qwen/Qwen3-Reranker-0.6B "))
    with pytest.raises(BadInput, match="is no demo"):
        load_deployment(path)
