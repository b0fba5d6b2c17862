"""Framework integrations on the xrerank client (timeouts, retries, chunking, an optional cache).

    pip install 'xrerank[llama-index]'   ->  xrerank.integrations.llama_index.XrerankRerank
    pip install 'xrerank[langchain]'     ->  xrerank.integrations.langchain.XrerankRerank

Each takes the server's base URL, the model uid and an API key; `xrerank connect --format
llama-index` (or langchain) prints them ready to paste.
"""

from __future__ import annotations

import os

from xrerank.client import Reranker
from xrerank.defaults import API_KEY_ENV


def client_for(endpoint: str, model_uid: str, api_key: str | None, timeout: float, **options: object) -> Reranker:
    """The client an integration ranks with. The key falls back to $XRERANK_API_KEY, then to the
    embedded server's own key when `endpoint` is the server `xrerank up` started on this machine."""
    if not api_key and not os.environ.get(API_KEY_ENV):
        from xrerank.xinference.local import embedded_api_key

        api_key = embedded_api_key(endpoint)
    return Reranker(endpoint, model_uid, api_key=api_key or None, timeout=timeout, **options)  # type: ignore[arg-type]
