"""Annotators and their login tokens.

A token is shown once, when it is made, as a login path; only its sha256 is stored. Tokens
carry 256 random bits, so a fast hash is enough (there is nothing to brute-force), and lookup by
hash means no stored secret is ever compared byte by byte.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reward_service.feedback.models import Annotator

TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 128


class AnnotatorError(ValueError):
    """An annotator command that cannot be carried out; the message says why."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def login_path(token: str) -> str:
    return f"/login?token={token}"


def create_annotator(session: Session, name: str) -> tuple[Annotator, str]:
    """A new annotator and its token (the only time the token exists in clear)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise AnnotatorError("--name must be 1 to 200 characters")
    token = new_token()
    annotator = Annotator(name=name, token_hash=hash_token(token))
    session.add(annotator)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AnnotatorError(
            f"annotator {name!r} exists; --new-token issues a fresh login link"
        ) from exc
    return annotator, token


def find(session: Session, name: str) -> Annotator:
    annotator = session.scalar(select(Annotator).where(Annotator.name == name))
    if annotator is None:
        raise AnnotatorError(f"no annotator named {name!r}")
    return annotator


def rotate_token(session: Session, name: str) -> tuple[Annotator, str]:
    """A fresh token for an existing annotator; the old link stops working at once."""
    annotator = find(session, name)
    token = new_token()
    annotator.token_hash = hash_token(token)
    return annotator, token


def by_token(session: Session, token: str) -> Annotator | None:
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return session.scalar(select(Annotator).where(Annotator.token_hash == hash_token(token)))
