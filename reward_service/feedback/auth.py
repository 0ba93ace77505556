"""Who is asking: every route but ``/login`` resolves an annotator from a token, or answers 401.

Two ways to present the token:

- ``Authorization: Bearer <token>`` for scripts and bots. Browsers never attach it on their
  own, so a bearer request cannot be forged by another site.
- the ``feedback_session`` cookie that ``/login`` sets for people (HttpOnly, SameSite=Lax).
  A cookie does travel with requests another site triggers, so every state-changing request
  made with it must also carry ``X-CSRF-Token``: an HMAC of the session token that the page
  embeds and no other origin can read. Changes also need a JSON body, which a plain HTML
  form cannot send.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from reward_service.feedback.annotators import by_token
from reward_service.feedback.labeling import LabelingError
from reward_service.feedback.models import Annotator

COOKIE = "feedback_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"feedback-csrf", hashlib.sha256).hexdigest()


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def presented_token(request: Request) -> tuple[str | None, bool]:
    """The token and whether it came from the cookie (and so needs the CSRF check)."""
    bearer = _bearer(request.headers.get("authorization"))
    if bearer:
        return bearer, False
    return request.cookies.get(COOKIE), True


def current_annotator(request: Request) -> Annotator:
    token, from_cookie = presented_token(request)
    if not token:
        raise LabelingError(
            401, "unauthorized", "log in with your /login?token=... link, or send a bearer token"
        )
    with request.app.state.database.read() as session:
        annotator = by_token(session, token)
    if annotator is None:
        raise LabelingError(401, "unauthorized", "unknown or revoked token; ask for a new link")
    if from_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
            raise LabelingError(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
    request.state.session_token = token
    return annotator


AnnotatorDep = Annotated[Annotator, Depends(current_annotator)]
