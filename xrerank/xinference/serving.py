"""The data plane as xrerank's own commands use it: which model to talk to, and a client for it."""

from __future__ import annotations

from xrerank.client import Reranker
from xrerank.errors import BadInput
from xrerank.weights.generated import is_random_model
from xrerank.xinference.records import Backend
from xrerank.xinference.session import Session


def rerank_target(server: Backend, model_uid: str | None) -> tuple[str, bool]:
    """The uid to rerank with (given, or the only rerank model running) and whether it is a demo model."""
    models = [m for m in server.models() if m.model_type == "rerank"]
    if model_uid is None:
        if len(models) != 1:
            running = ", ".join(m.uid for m in models) or "none"
            raise BadInput(f"--model-uid is needed: rerank models running: {running}")
        model_uid = models[0].uid
    name = next((m.model_name for m in models if m.uid == model_uid), None)
    registration = server.registration(name) if name else None
    return model_uid, is_random_model(registration.model_id if registration else None)


def open_client(session: Session, model_uid: str, **options: object) -> Reranker:
    """A client on the data-plane credential (an API key), never the admin login."""
    options.setdefault("timeout", session.timeout)
    return Reranker(
        session.endpoint,
        model_uid,
        credentials=session.data_credentials(),
        source_address=session.source_address,
        **options,  # type: ignore[arg-type]
    )
