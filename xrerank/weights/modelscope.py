"""Weights from ModelScope, through the real `modelscope` client.

snapshot_download verifies each file's sha256 against the hub's listing and resumes partial
`*.incomplete` files; HubSource adds the in-progress marker, the cross-encoder check and the
manifest written last.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from xrerank.errors import Unreachable, XrerankError
from xrerank.weights import HubSource, network_reason, summary


class ModelScope(HubSource):
    name = "modelscope"
    default_revision = "master"
    endpoint_env = "MODELSCOPE_ENDPOINT"
    default_endpoint = "https://modelscope.cn"
    example_model_id = "AI-ModelScope/bge-reranker-v2-m3"

    def snapshot(self, model_id: str, directory: Path, revision: str | None, endpoint: str | None) -> None:
        # snapshot_download checks each file's sha256 against the hub's listing.
        self.fetch_files(model_id, directory, revision, endpoint, None)

    def fetch_files(
        self, model_id: str, directory: Path, revision: str | None, endpoint: str | None, patterns: list[str] | None
    ) -> None:
        if not sys.stderr.isatty():
            os.environ.setdefault("TQDM_DISABLE", "1")
        from modelscope import snapshot_download

        self._call(
            lambda: snapshot_download(
                model_id, revision=revision, local_dir=str(directory), endpoint=endpoint,
                allow_patterns=patterns,
            ),
            model_id,
            revision,
            endpoint,
        )  # fmt: skip

    def _call(self, call: Callable[[], object], model_id: str, revision: str | None, endpoint: str | None) -> None:
        """Run one modelscope call; its errors become one line with our exit codes."""
        import requests
        from modelscope_hub.errors import HubError, NetworkError

        where = endpoint or self.default_endpoint
        try:
            call()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status == 404:
                raise XrerankError(f"{model_id}@{revision} does not exist on {where}; check the model id") from None
            if status in (401, 403):
                raise Unreachable(f"{where} refused {model_id} ({status}); set MODELSCOPE_API_TOKEN") from None
            raise XrerankError(f"download of {model_id} from {where} failed: {summary(exc)}") from None
        except NetworkError as exc:
            raise Unreachable(
                f"cannot reach the model hub at {where} ({network_reason(exc)}); "
                "offline? try the demo model: xrerank up --demo"
            ) from None
        except HubError as exc:
            raise XrerankError(
                f"download of {model_id} from {where} failed, run it again to resume: {summary(exc)}"
            ) from None


SOURCE = ModelScope()
