"""Optional bearer-key authentication for the scoring and model routes.

Keys live in a file (one per line, ``#`` comments allowed) so they can come from a Kubernetes
secret and never appear in a process listing. Every configured key is compared in constant time
and all of them are always compared, so response timing reveals neither a key nor which one
nearly matched. Health and metrics routes never depend on this: probes and scrapers carry no key.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import Request

from reward_service.serve.errors import ApiError


class KeyFileError(ValueError):
    """The configured key file is missing, unreadable or empty."""


def read_keys(path: Path) -> tuple[bytes, ...]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise KeyFileError(f"API keys file {path}: {exc.strerror or exc}") from exc
    keys = tuple(
        line.strip().encode() for line in lines if line.strip() and not line.startswith("#")
    )
    if not keys:
        raise KeyFileError(
            f"API keys file {path} holds no key; remove the setting to turn auth off"
        )
    return keys


def key_matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


def bearer_token(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()


async def require_key(request: Request) -> None:
    """FastAPI dependency: a no-op when auth is off, else 401 without a valid bearer key."""
    keys: tuple[bytes, ...] = request.app.state.api_keys
    if not keys:
        return
    token = bearer_token(request.headers.get("authorization"))
    if token is None or not key_matches(token, keys):
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid API key; send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
