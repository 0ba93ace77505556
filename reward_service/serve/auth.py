"""Optional API-key authentication, checked before a request body is read.

Keys live in a file so they can come from a Kubernetes secret and never appear in a process
listing. The format is strict, because a lenient parser turns typos into working keys: one key
per line, surrounding whitespace ignored; blank lines and lines whose first non-blank character
is ``#`` are comments; a key is 16 to 512 printable ASCII characters without spaces. Anything
else stops the service at start-up, naming the line (never its content).

A client presents a key as ``Authorization: Bearer <key>``, or as HTTP Basic credentials with
the key as password (any user name) or as user name with an empty password: that is what
``requests`` and ``aiohttp`` send for a URL such as ``http://rm:<key>@host:8000/get_reward``,
the only way OpenRLHF can carry one. Every configured key is compared in constant time and all
of them are always compared, so response timing reveals neither a key nor which one nearly
matched. The request guard (:mod:`reward_service.serve.guard`) enforces this on every route
except the open ones below: probes and scrapers carry no key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from pathlib import Path

from fastapi import Request

from reward_service.serve.errors import ApiError

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
KEY_PATTERN = re.compile(r"[\x21-\x7e]{16,512}")
CHALLENGE = {"WWW-Authenticate": "Bearer"}
UNAUTHORIZED_MESSAGE = (
    "missing or invalid API key; send 'Authorization: Bearer <key>' or put the key in the URL "
    "as http://user:<key>@host"
)


class KeyFileError(ValueError):
    """The configured key file is missing, unreadable, malformed or empty."""


def parse_keys(text: str, source: str) -> tuple[bytes, ...]:
    keys = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not KEY_PATTERN.fullmatch(line):
            raise KeyFileError(
                f"API keys file {source}, line {number}: not a key (keys are 16-512 printable "
                "ASCII characters without spaces; comment lines start with '#')"
            )
        keys.append(line.encode())
    if not keys:
        raise KeyFileError(
            f"API keys file {source} holds no key; write one per line (e.g. the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`), or remove the "
            "setting to turn auth off"
        )
    return tuple(keys)


def read_keys(path: Path) -> tuple[bytes, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise KeyFileError(f"API keys file {path}: {reason}") from exc
    return parse_keys(text, str(path))


def key_matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


def presented_key(header: bytes | str | None) -> bytes | None:
    """The key in an ``Authorization`` header value, Bearer or Basic; None when there is none."""
    if not header:
        return None
    raw = header.encode("latin-1") if isinstance(header, str) else header
    scheme, _, credentials = raw.strip().partition(b" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == b"bearer":
        return credentials
    if scheme.lower() == b"basic":
        try:
            user, _, password = base64.b64decode(credentials, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        return password or user or None
    return None


def authorized(header: bytes | str | None, keys: tuple[bytes, ...]) -> bool:
    token = presented_key(header)
    return token is not None and key_matches(token, keys)


async def require_key(request: Request) -> None:
    """FastAPI dependency for routers that want the check restated at the route; the request
    guard has already refused unauthenticated requests before their body was read."""
    keys: tuple[bytes, ...] = request.app.state.api_keys
    if keys and not authorized(request.headers.get("authorization"), keys):
        raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE, headers=CHALLENGE)
