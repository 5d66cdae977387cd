"""The `Authorization: Bearer TOKEN` header, read one way by every server (`serve`, `world tools`, `annotate`).

The scheme is matched case-insensitively (RFC 6750 says so; clients differ), the token is stripped, and a key
is compared in constant time (`hmac.compare_digest`), so a wrong key's answer time says nothing about how
much of it was right.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request


def bearer_token(request: Request) -> str | None:
    """The token of the request's Bearer header ("" when the header names the scheme only), None without one."""
    scheme, space, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not space:
        return None
    return token.strip()


def key_matches(given: str, key: str) -> bool:
    """Whether `given` is `key`, compared in constant time."""
    return hmac.compare_digest(given.encode(), key.encode())
