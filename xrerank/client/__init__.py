"""The app-facing client: `Reranker` over one pooled HTTP session, its transport and score cache.

Needs no server-side package (no torch, no xinference): `pip install xrerank` is enough.
"""

from __future__ import annotations

from xrerank.client.cache import ScoreCache
from xrerank.client.reranker import Reranker, RerankError, Result

__all__ = ["Reranker", "RerankError", "Result", "ScoreCache"]
