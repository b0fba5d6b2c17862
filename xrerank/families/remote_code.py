"""Cross-encoders whose code ships in their repository (config.json's `auto_map`):
jinaai/jina-reranker-v2-base-multilingual, Alibaba-NLP/gte-multilingual-reranker-base.

Xinference 4.1 runs a custom model's own code only when its server was started with
XINFERENCE_TRUST_REMOTE_CODE=1; otherwise the launch fails. xrerank deploys one only when the
deployment file says `trust_remote_code: true`, and names the files that will run.
"""

from __future__ import annotations

import json
from pathlib import Path

from xrerank.families.cross_encoder import CrossEncoderFamily

CLASSIFIER = "AutoModelForSequenceClassification"
# The demo's own code: XLM-RoBERTa under a model_type transformers does not know, so that only the
# repository's files can load it (a known model_type would load transformers' class and skip them).
_DEMO_CODE = {
    "configuration_xrerank.py": (
        "from transformers import XLMRobertaConfig\n\n\n"
        'class XrerankDemoConfig(XLMRobertaConfig):\n    model_type = "xrerank-remote-demo"\n'
    ),
    "modeling_xrerank.py": (
        "from transformers import XLMRobertaForSequenceClassification\n\n"
        "from .configuration_xrerank import XrerankDemoConfig\n\n\n"
        "class XrerankDemoForSequenceClassification(XLMRobertaForSequenceClassification):\n"
        "    config_class = XrerankDemoConfig\n"
    ),
}


class RemoteCode(CrossEncoderFamily):
    name = "remote-code"
    title = "cross-encoder with its own code (auto_map)"
    examples = ("jinaai/jina-reranker-v2-base-multilingual", "Alibaba-NLP/gte-multilingual-reranker-base")
    route = "sentence-transformers' CrossEncoder with trust_remote_code (XINFERENCE_TRUST_REMOTE_CODE=1)"
    runs_repository_code = True
    trust_remote_code = True
    demo_id = "xrerank/demo-remote-code"

    def recognises(self, config: dict) -> bool:
        auto_map = config.get("auto_map")
        return isinstance(auto_map, dict) and CLASSIFIER in auto_map

    def demo_code_files(self, directory: Path) -> list[str]:
        return [str(directory / name) for name in sorted(_DEMO_CODE)]

    def write_tiny_model(self, directory: Path, seed: int) -> None:
        from xrerank.families.xlm_roberta import FAMILY as XLM_ROBERTA

        XLM_ROBERTA.write_tiny_model(directory, seed)
        for name, code in _DEMO_CODE.items():
            (directory / name).write_text(code)
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        config.update(
            model_type="xrerank-remote-demo",
            architectures=["XrerankDemoForSequenceClassification"],
            auto_map={
                "AutoConfig": "configuration_xrerank.XrerankDemoConfig",
                CLASSIFIER: "modeling_xrerank.XrerankDemoForSequenceClassification",
            },
        )
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def code_files(config: dict, directory: Path) -> list[str]:
    """The Python files `auto_map` runs: in `directory`, or `repo--module` in another repository."""
    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    files = []
    for reference in auto_map.values():
        for entry in reference if isinstance(reference, list) else [reference]:
            if not isinstance(entry, str) or "." not in entry:
                continue
            repository, _, module = entry.rpartition(".")[0].rpartition("--")
            place = f"{repository} (another repository)" if repository else str(directory)
            files.append(f"{place}/{module.replace('.', '/')}.py")
    return sorted(set(files))


FAMILY = RemoteCode()
