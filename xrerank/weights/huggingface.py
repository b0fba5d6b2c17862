"""Weights from the Hugging Face Hub, through the real `huggingface_hub` client.

snapshot_download resumes partial files, but checks only their sizes: a file whose bytes
differ from the Hub's is kept. So xrerank asks for the repository's file list with its hashes
first (pinning the commit), downloads that commit, and checks every file itself: sha256 for
LFS files, the git blob id for the others. A file that fails is deleted with the client's
record of it, so the next run fetches it again.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xrerank.errors import BadInput, Unreachable, XrerankError
from xrerank.weights import HubSource, network_reason, summary
from xrerank.weights.modeldir import sha256_of

_CLIENT_METADATA = ".cache"  # huggingface_hub keeps local_dir's download records in .cache/huggingface


class HuggingFace(HubSource):
    name = "huggingface"
    default_revision = "main"
    endpoint_env = "HF_ENDPOINT"
    default_endpoint = "https://huggingface.co"
    example_model_id = "BAAI/bge-reranker-v2-m3"
    client_metadata = (_CLIENT_METADATA,)

    def snapshot(self, model_id: str, directory: Path, revision: str | None, endpoint: str | None) -> None:
        from huggingface_hub import HfApi

        info = self._call(
            lambda: HfApi(endpoint=endpoint).model_info(model_id, revision=revision, files_metadata=True),
            model_id,
            revision,
            endpoint,
        )
        self.fetch_files(model_id, directory, info.sha, endpoint, None)
        for sibling in info.siblings or []:
            _check_file(directory, sibling, model_id, endpoint or self.default_endpoint)

    def fetch_files(
        self, model_id: str, directory: Path, revision: str | None, endpoint: str | None, patterns: list[str] | None
    ) -> None:
        from huggingface_hub import snapshot_download

        self._call(
            lambda: snapshot_download(
                model_id, revision=revision, local_dir=str(directory), endpoint=endpoint, allow_patterns=patterns,
                tqdm_class=_quiet_tqdm(),
            ),
            model_id,
            revision,
            endpoint,
        )  # fmt: skip

    def _call(self, call: Callable[[], Any], model_id: str, revision: str | None, endpoint: str | None) -> Any:
        """Run one huggingface_hub call; its errors become one line with our exit codes."""
        import httpx
        from huggingface_hub import constants
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        where = endpoint or self.default_endpoint
        if constants.is_offline_mode():
            raise BadInput(f"HF_HUB_OFFLINE is set, so huggingface_hub will not download {model_id}; unset it")
        try:
            return call()
        except GatedRepoError:
            raise Unreachable(f"{model_id} on {where} is gated: accept its terms on the Hub and set HF_TOKEN") from None
        except RepositoryNotFoundError:
            raise XrerankError(
                f"{model_id} does not exist on {where} (or is private: set HF_TOKEN); check the model id"
            ) from None
        except RevisionNotFoundError:
            raise XrerankError(f"{model_id} has no revision {revision!r} on {where}") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise Unreachable(f"{where} refused {model_id} ({status}); set HF_TOKEN") from None
            raise XrerankError(f"download of {model_id} from {where} failed: {summary(exc)}") from None
        except (LocalEntryNotFoundError, httpx.TransportError) as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) or isinstance(
                cause, (httpx.ConnectError, httpx.ConnectTimeout)
            ):
                raise Unreachable(
                    f"cannot reach the model hub at {where} ({network_reason(cause)}); "
                    "offline? try the demo model: xrerank up --demo"
                ) from None
            raise XrerankError(
                f"download of {model_id} from {where} was interrupted, run it again to resume: {summary(cause)}"
            ) from None
        except OSError as exc:  # the client's size check ("Consistency check failed")
            raise XrerankError(
                f"download of {model_id} from {where} failed, run it again to resume: {summary(exc)}"
            ) from None


def _check_file(directory: Path, sibling: Any, model_id: str, where: str) -> None:
    path = directory / sibling.rfilename
    if not path.is_file():
        raise XrerankError(f"{model_id}: {sibling.rfilename} is listed on {where} but was not downloaded; run again")
    if sibling.lfs is not None:
        expected, actual, kind = sibling.lfs.sha256, sha256_of(path), "sha256"
    elif sibling.blob_id:
        expected, actual, kind = sibling.blob_id, _git_blob_id(path), "git blob id"
    else:
        return
    if actual != expected:
        path.unlink()
        record = directory / _CLIENT_METADATA / "huggingface" / "download" / f"{sibling.rfilename}.metadata"
        record.unlink(missing_ok=True)
        raise XrerankError(
            f"download of {model_id} from {where} failed, run it again: {sibling.rfilename} has {kind} "
            f"{actual}, the hub lists {expected}; the file was deleted"
        )


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quiet_tqdm() -> Any:
    """No progress bars when stderr is not a terminal (CI logs), the client's own bars otherwise."""
    if sys.stderr.isatty():
        return None
    from huggingface_hub.utils import tqdm

    class Quiet(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})

    return Quiet


SOURCE = HuggingFace()
