import json

import pytest

from xrerank.errors import BadInput
from xrerank.weights.modeldir import IN_PROGRESS, MANIFEST, inspect_model_dir, read_complete_manifest


def _model_dir(tmp_path, config=None, files=("tokenizer.json", "model.safetensors")):
    directory = tmp_path / "model"
    directory.mkdir()
    base = {"architectures": ["XLMRobertaForSequenceClassification"], "id2label": {"0": "LABEL_0"}}
    base.update({"model_type": "xlm-roberta", "max_position_embeddings": 514})
    (directory / "config.json").write_text(json.dumps(config if config is not None else base))
    for name in files:
        (directory / name).write_bytes(b"x")
    return directory


def test_a_one_label_sequence_classifier_is_a_cross_encoder(tmp_path):
    found = inspect_model_dir(_model_dir(tmp_path))
    assert found.family.name == "xlm-roberta"
    assert found.max_tokens_limit == 512  # RoBERTa positions start after the padding index


def test_the_demo_model_is_a_cross_encoder(demo_model):
    assert inspect_model_dir(demo_model).max_tokens_limit == 512
    assert read_complete_manifest(demo_model)["source"] == "demo"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"}, "not a reranker family"),
        ({"architectures": ["BertForSequenceClassification"], "model_type": "bert", "num_labels": 3}, "3 labels"),
        ({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}, "2 labels"),  # the default
    ],
)
def test_other_models_are_refused(tmp_path, config, message):
    with pytest.raises(BadInput, match=message):
        inspect_model_dir(_model_dir(tmp_path, config))


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(BadInput, match="no tokenizer"):
        inspect_model_dir(_model_dir(tmp_path, files=("model.safetensors",)))
    with pytest.raises(BadInput, match="does not exist"):
        inspect_model_dir(tmp_path / "nowhere")


def test_config_that_is_not_json_is_named(tmp_path):
    directory = _model_dir(tmp_path)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(BadInput, match="config.json is not valid JSON"):
        inspect_model_dir(directory)


def test_an_unfinished_download_is_not_a_model(tmp_path):
    directory = _model_dir(tmp_path)
    (directory / IN_PROGRESS).touch()
    with pytest.raises(BadInput, match="unfinished download"):
        inspect_model_dir(directory)
    (directory / IN_PROGRESS).unlink()
    (directory / "model.safetensors.incomplete").write_bytes(b"x")
    with pytest.raises(BadInput, match="unfinished download"):
        inspect_model_dir(directory)


def test_a_manifest_whose_files_changed_is_not_complete(demo_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_model, copy)
    assert read_complete_manifest(copy) is not None
    with (copy / "model.safetensors").open("ab") as stream:
        stream.write(b"extra")
    assert read_complete_manifest(copy) is None
    (copy / MANIFEST).unlink()
    assert read_complete_manifest(copy) is None
