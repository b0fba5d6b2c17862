"""What an app needs to reach a deployed reranker: the URLs, the model uid and a key, with where it came from."""

from __future__ import annotations

from dataclasses import dataclass

HIDDEN = "<hidden: add --show-key>"


@dataclass(frozen=True)
class Connection:
    base_url: str  # for apps on this machine
    app_base_url: str  # for apps on other machines and in containers (the same unless they differ)
    model_uid: str
    key: str | None
    key_name: str | None
    key_note: str  # where the key comes from, for people
    v2_url: str | None = None  # the compatibility route (Cohere v2, key in the URL), for apps; None if none runs

    @property
    def rerank_url(self) -> str:
        return f"{self.base_url}/v1/rerank"

    def shown_key(self, show: bool) -> str | None:
        if self.key is None:
            return None
        return self.key if show else f"{self.key[:7]}…{HIDDEN}"

    def as_dict(self, show_key: bool) -> dict:
        return {
            "base_url": self.base_url,
            "app_base_url": self.app_base_url,
            "rerank_url": self.rerank_url,
            "model_uid": self.model_uid,
            "api_key": self.shown_key(show_key),
            "api_key_name": self.key_name,
            "api_key_from": self.key_note,
            "cohere_v2_base_url": self.v2_url,
        }
