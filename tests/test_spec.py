import json
from pathlib import Path

import pytest

from xrerank.deploy.spec import build_spec, spec_differences
from xrerank.errors import BadInput
from xrerank.families import by_name
from xrerank.names import validate_model_name, validate_model_uid
from xrerank.weights.modeldir import ModelDir

GOLDEN = Path(__file__).parent / "golden"
MODEL = ModelDir(path=Path("/models/bge-reranker-v2-m3"), family=by_name("xlm-roberta"), model_type="xlm-roberta",
                 max_tokens_limit=8192)  # fmt: skip


def test_spec_matches_the_format_xinference_4_1_accepts():
    spec = build_spec(MODEL, "custom-bge-reranker-v2-m3", max_tokens=1024, model_id="AI-ModelScope/bge-reranker-v2-m3")
    assert spec == json.loads((GOLDEN / "spec-bge-reranker-v2-m3.json").read_text())


def test_max_tokens_defaults_to_the_models_limit():
    assert build_spec(MODEL, "custom-x")["max_tokens"] == 8192


@pytest.mark.parametrize("name", ["bge-reranker-v2-m3", "jina-reranker-v2"])
def test_builtin_names_are_refused(name):
    with pytest.raises(BadInput, match="built-in"):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["has space", "a/b", "q?x", "x#y", "a&b", "a=b", "a%b", "a+b", "..", ".hidden"])
def test_illegal_names_are_refused(name):
    with pytest.raises(BadInput, match="not allowed"):
        validate_model_name(name)


@pytest.mark.parametrize("check", [validate_model_name, validate_model_uid])
def test_empty_and_overlong_names_and_uids_are_refused(check):
    with pytest.raises(BadInput, match="is required"):
        check("")
    with pytest.raises(BadInput, match="5000 characters long; at most 100"):
        check("x" * 5000)
    assert check("custom-bge_reranker.v2-m3") == "custom-bge_reranker.v2-m3"


@pytest.mark.parametrize("uid", ["../x", "a/../../b", "x\ny", "tab\tuid"])
def test_uids_that_could_leave_a_directory_are_refused(uid):
    with pytest.raises(BadInput, match="not allowed"):
        validate_model_uid(uid)


def test_max_tokens_above_the_position_embeddings_is_refused():
    with pytest.raises(BadInput, match="exceeds what .* can take \\(8192"):
        build_spec(MODEL, "custom-x", max_tokens=8193)


def test_no_language_is_refused():
    with pytest.raises(BadInput, match="language"):
        build_spec(MODEL, "custom-x", languages=[])


def test_differences_ignore_the_keys_the_server_adds():
    wanted = build_spec(MODEL, "custom-x", max_tokens=512)
    registered = json.loads(json.dumps(wanted))
    registered.update({"model_ability": [], "cache_config": None, "virtualenv": None, "is_builtin": False})
    registered["model_specs"][0].update({"model_revision": None, "model_uri": "file:///models/bge-reranker-v2-m3"})
    assert spec_differences(registered, wanted) == []


def test_differences_name_the_key_and_both_values():
    wanted = build_spec(MODEL, "custom-x", max_tokens=512)
    registered = build_spec(MODEL, "custom-x", max_tokens=1024)
    assert spec_differences(registered, wanted) == ["max_tokens: registered 1024, wanted 512"]
