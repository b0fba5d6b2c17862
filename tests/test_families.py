"""Reranker families: each recognised from its config.json, registered with the type and the name
Xinference 4.1 routes correctly, and refused (exit 2) when a name or a missing opt-in would send it
down the wrong path. The tiny models are real ones of each architecture, scored in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xrerank.deploy.spec import build_spec
from xrerank.errors import BadInput
from xrerank.families import QWEN3_TRIGGERS, Pair, by_name, demo_families, detect, families
from xrerank.weights.modeldir import inspect_model_dir

# config.json as each family's real model ships it (the keys detection reads).
REAL_CONFIGS = {
    "xlm-roberta": {"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta",
                    "num_labels": 1, "max_position_embeddings": 8194},
    "bert": {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "id2label": {"0": "LABEL_0"},
             "max_position_embeddings": 512},
    "modernbert": {"architectures": ["ModernBertForSequenceClassification"], "model_type": "modernbert",
                   "num_labels": 1, "max_position_embeddings": 8192},
    "deberta-v2": {"architectures": ["DebertaV2ForSequenceClassification"], "model_type": "deberta-v2",
                   "id2label": {"0": "LABEL_0"}, "max_position_embeddings": 512},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151669,
              "max_position_embeddings": 40960},
    "llm-based": {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "vocab_size": 256000},
    "remote-code": {"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "XLMRoberta",
                    "num_labels": 1, "auto_map": {
                        "AutoConfig": "jinaai/jina-xlm-roberta--configuration_xlm_roberta.XLMRobertaFlashConfig",
                        "AutoModelForSequenceClassification":
                            "jinaai/jina-xlm-roberta--modeling_xlm_roberta.XLMRobertaForSequenceClassification"}},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_each_family_is_recognised_from_its_real_config(name, tmp_path):
    assert detect(REAL_CONFIGS[name], tmp_path).name == name


def test_every_family_has_a_real_config_here():
    assert sorted(REAL_CONFIGS) == sorted(f.name for f in families())


@pytest.mark.parametrize(
    "config",
    [
        {"architectures": ["ElectraForSequenceClassification"], "model_type": "electra", "num_labels": 1},
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
        {"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"},  # an embedding model
        {},
    ],
)
def test_an_unknown_architecture_is_refused_naming_what_was_found_and_the_known_families(config, tmp_path):
    with pytest.raises(BadInput) as refused:
        detect(config, tmp_path)
    message = str(refused.value)
    assert "not a reranker family xrerank knows" in message and "Qwen3-Reranker" in message
    assert str(config.get("architectures") or []) in message


def _model(name: str, path: Path) -> object:
    from xrerank.weights.modeldir import ModelDir

    family = by_name(name)
    return ModelDir(path, family, REAL_CONFIGS[name]["model_type"], family.token_limit(REAL_CONFIGS[name]),
                    REAL_CONFIGS[name])  # fmt: skip


def test_a_qwen3_reranker_under_a_name_without_qwen3_is_refused_with_a_name_that_works():
    with pytest.raises(BadInput) as refused:
        build_spec(_model("qwen3", Path("/m/q")), "my-reranker", max_tokens=1024)
    assert "CrossEncoder path" in str(refused.value) and "Qwen3-Reranker-my-reranker" in str(refused.value)
    spec = build_spec(_model("qwen3", Path("/m/q")), "Qwen3-Reranker-my-reranker", max_tokens=1024)
    assert (spec["type"], spec["max_tokens"]) == ("normal", 1024)


@pytest.mark.parametrize("trigger", QWEN3_TRIGGERS)
def test_a_cross_encoder_under_a_name_with_a_qwen3_trigger_is_refused(trigger):
    name = f"my-{trigger.upper()}-ce"  # Xinference lowercases before it compares
    with pytest.raises(BadInput) as refused:
        build_spec(_model("bert", Path("/m/b")), name)
    assert "Qwen3-Reranker path" in str(refused.value) and "e.g. my-ce" in str(refused.value)
    build_spec(_model("bert", Path("/m/b")), "my-ce")


def test_the_llm_based_family_registers_as_llm_based_and_needs_flagembedding_on_the_server():
    spec = build_spec(_model("llm-based", Path("/m/g")), "custom-bge-reranker-v2-gemma", max_tokens=1024)
    assert spec["type"] == "LLM-based" and by_name("llm-based").server_packages == ("FlagEmbedding",)


def test_a_model_that_ships_code_needs_the_opt_in_and_names_its_files():
    with pytest.raises(BadInput) as refused:
        build_spec(_model("remote-code", Path("/m/j")), "custom-jina-reranker-v2", max_tokens=1024)
    message = str(refused.value)
    assert "trust_remote_code: true" in message and "XINFERENCE_TRUST_REMOTE_CODE=1" in message
    assert "jinaai/jina-xlm-roberta (another repository)/modeling_xlm_roberta.py" in message
    spec = build_spec(_model("remote-code", Path("/m/j")), "custom-jina", max_tokens=1024, trust_remote_code=True)
    assert spec["type"] == "normal"


def test_a_qwen3_reranker_needs_room_for_its_prompt():
    with pytest.raises(BadInput, match="at least 128"):
        build_spec(_model("qwen3", Path("/m/q")), "Qwen3-Reranker-x", max_tokens=64)


def test_a_decoders_parameters_are_counted_as_a_decoder():
    """Qwen3-Reranker-0.6B's config: 0.6 B parameters (an encoder's formula gives another number)."""
    config = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
              "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151669, "tie_word_embeddings": True}  # fmt: skip
    assert by_name("qwen3").parameters(config) == pytest.approx(596e6, rel=0.01)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from xrerank.weights.generated import make_demo_model

    root = tmp_path_factory.mktemp("families")
    return {f.name: make_demo_model(root / f.name, family=f.name) for f in demo_families()}


@pytest.mark.parametrize("name", ["xlm-roberta", "bert", "modernbert", "deberta-v2", "qwen3", "remote-code"])
def test_each_offline_family_has_a_tiny_model_that_is_recognised_and_scores(tiny, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = inspect_model_dir(tiny[name])
    assert model.family.name == name
    pairs = [Pair("what is the capital of france", d) for d in ("paris is the capital of france", "apple fruit")]
    scores = model.family.scores(model.path, pairs, 512, "cpu", None)
    assert len(scores) == 2 and all(0 < s < 1 for s in scores) and scores[0] != scores[1]


def test_the_tiny_qwen3_reranker_is_scored_by_the_yes_no_prompt_in_micro_batches(tiny):
    """Padding differs with the batch, so the reference batches as the server does: 4 pairs at a time."""
    model = inspect_model_dir(tiny["qwen3"])
    documents = ["a", "paris is the capital of france " * 3, "b", "apple", "c", "the great wall"]
    together = model.family.scores(model.path, [Pair("q", d) for d in documents], 512, "cpu", None)
    alone = [model.family.scores(model.path, [Pair("q", d)], 512, "cpu", None)[0] for d in documents]
    assert together == pytest.approx(alone, abs=1e-5)


def test_a_tiny_model_of_another_family_is_not_taken_for_the_one_asked(tiny):
    from xrerank.weights.generated import make_demo_model

    with pytest.raises(BadInput, match="holds another model"):
        make_demo_model(tiny["bert"], family="qwen3")


def test_the_remote_code_demo_refuses_to_load_without_trust(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification

    config = json.loads((tiny["remote-code"] / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_xrerank.")
    with pytest.raises(ValueError, match="custom code"):
        AutoModelForSequenceClassification.from_pretrained(tiny["remote-code"], trust_remote_code=False)


def test_doctor_names_the_family_and_the_package_a_local_server_lacks():
    from xrerank.checks.doctor import FAIL, OK, WARN, family_findings

    gemma = family_findings(REAL_CONFIGS["llm-based"], server_here=True)
    assert gemma[0].level == OK and "FlagEmbedding's FlagLLMReranker" in gemma[0].evidence
    missing = next(f for f in gemma if f.check == "package FlagEmbedding")
    assert missing.level == FAIL and "xrerank[llm-based]" in missing.fix  # not installed in the test env
    remote = family_findings(REAL_CONFIGS["llm-based"], server_here=False)
    assert next(f for f in remote if f.check == "package FlagEmbedding").level == WARN
    jina = family_findings(REAL_CONFIGS["remote-code"], server_here=True)
    assert any(f.check == "repository code" and f.level == WARN for f in jina)
    unknown = family_findings({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, server_here=True)
    assert unknown[0].level == FAIL and "no reranker family" in unknown[0].evidence


def test_the_llm_based_reference_without_flagembedding_is_refused_in_one_line(tmp_path):
    with pytest.raises(BadInput, match=r"xrerank\[llm-based\]"):
        by_name("llm-based").scores(tmp_path, [Pair("q", "d")], 512, "cpu", None)


def test_the_demo_families_are_the_choices_of_make_demo_model_and_up(run):
    from xrerank.cli.base import demo_family_names

    assert demo_family_names() == [f.name for f in demo_families()]
    assert "llm-based" not in demo_family_names()
    result = run("make-demo-model", "/nonexistent/x", "--family", "llm-based")
    assert result.exit_code == 2 and "Invalid value for '--family'" in result.stderr


def test_up_takes_family_only_with_the_demo(run, tmp_path):
    result = run("up", "--family", "qwen3", "--port", "1")
    assert result.exit_code == 2 and "use it with --demo" in result.stderr


@pytest.mark.parametrize(
    "name, family",
    [("Qwen3-VL-Reranker-custom", "qwen3"), ("Jina-Reranker-M0", "bert"), ("qwen3-jina-reranker-v3.5", "qwen3"),
     ("my-minicpm-reranker", "xlm-roberta")],
)  # fmt: skip
def test_names_that_xinference_routes_to_another_path_first_are_refused(name, family):
    problem = by_name(family).name_problem(name)
    assert problem and "sends any model down Xinference 4.1's" in problem


def test_the_offered_name_meets_the_rule_itself():
    problem = by_name("bert").name_problem("qwqwen3en3-x")
    offered = problem.rsplit("e.g. ", 1)[1]
    assert by_name("bert").name_problem(offered) is None


@pytest.mark.parametrize(
    "config, says",
    [
        ({"architectures": ["BertForSequenceClassification"], "model_type": ["bert"]}, "not a reranker family"),
        ({"architectures": ["BertForSequenceClassification"], "model_type": {"a": 1}}, "not a reranker family"),
        ({"architectures": ["BertForSequenceClassification"], "model_type": "bert", "id2label": 5}, "2 labels"),
        ({"architectures": ["BertForSequenceClassification"], "model_type": "bert", "num_labels": "1"},
         "num_labels '1' is not a whole number"),
        ({**REAL_CONFIGS["bert"], "max_position_embeddings": -5}, "max_position_embeddings -5"),
        ({**REAL_CONFIGS["bert"], "max_position_embeddings": "512"}, "max_position_embeddings '512'"),
    ],
)  # fmt: skip
def test_a_malformed_config_is_one_line_of_bad_input(config, says, tmp_path):
    with pytest.raises(BadInput, match=says):
        detect(config, tmp_path)


def test_a_qwen3_tokenizer_without_a_single_yes_token_is_refused(tiny, tmp_path):
    import shutil

    broken = tmp_path / "q"
    shutil.copytree(tiny["qwen3"], broken)
    document = json.loads((broken / "tokenizer.json").read_text())
    document["added_tokens"] = [t for t in document["added_tokens"] if t["content"] != "yes"]
    (broken / "tokenizer.json").write_text(json.dumps(document))
    with pytest.raises(BadInput, match="no single 'yes' token"):
        inspect_model_dir(broken)


def test_a_demo_directory_holding_another_demo_is_refused_before_anything_is_deployed(tiny):
    from xrerank.weights import source_for

    with pytest.raises(BadInput, match="holds another demo"):
        source_for("demo").is_complete(tiny["bert"], "xrerank/demo-qwen3-reranker")
    assert source_for("demo").is_complete(tiny["bert"], "xrerank/demo-ms-marco-minilm")


def test_a_demos_name_rule_and_opt_in_hold_before_its_weights_exist(tmp_path):
    from xrerank.deploy.engine import check_family_rules, family_view
    from xrerank.deploy.target import load_target

    demo = (Path(__file__).resolve().parent.parent / "configs" / "demo.yaml").read_text()
    path = tmp_path / "q.yaml"
    path.write_text(demo.replace("  source: demo ", "  source: demo\n  model_id: xrerank/demo-qwen3-reranker "))
    target = load_target(path, tmp_path / "home")
    assert family_view(target)["name"] == "qwen3"
    with pytest.raises(BadInput, match="must contain 'qwen3'"):
        check_family_rules(target)
    path.write_text(demo.replace("  source: demo ", "  source: demo\n  model_id: xrerank/demo-remote-code "))
    target = load_target(path, tmp_path / "home")
    assert family_view(target)["runs_code"][0].endswith("configuration_xrerank.py")
    with pytest.raises(BadInput, match="trust_remote_code: true"):
        check_family_rules(target)


def test_a_spec_file_goes_through_the_checks_a_spec_made_here_does(tiny, tmp_path):
    from xrerank.deploy.engine import load_spec_file
    from xrerank.deploy.spec import build_spec

    spec = build_spec(inspect_model_dir(tiny["qwen3"]), "Qwen3-Reranker-tiny", max_tokens=512)
    for change, says in [({"max_tokens": 5}, "at least 128"), ({"max_tokens": 999999}, "exceeds"),
                         ({"max_tokens": "512"}, "not a whole number"), ({"type": "LLM-based"}, "type 'LLM-based'"),
                         ({"model_name": "my-reranker"}, "must contain 'qwen3'")]:  # fmt: skip
        path = tmp_path / "s.json"
        path.write_text(json.dumps({**spec, **change}))
        with pytest.raises(BadInput, match=says):
            load_spec_file(path)


def test_doctor_fails_a_model_that_ships_code_on_an_embedded_server_without_trust():
    from xrerank.checks.doctor import FAIL, family_findings

    findings = family_findings(REAL_CONFIGS["remote-code"], server_here=True, trusting=False)
    assert any(f.check == "repository code" and f.level == FAIL and "xrerank down" in f.fix for f in findings)


def test_the_built_in_quality_cases_load():
    from xrerank.checks.verify import load_cases

    assert len(load_cases(None)) == 7
