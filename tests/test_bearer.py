"""One reading of `Authorization: Bearer TOKEN` for every server: scheme in any case, token stripped, a header
that names the scheme only gives an empty token (refused), anything else is no Bearer token at all."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from rlhfkit.bearer import bearer_token, key_matches


def request_with(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer s3cret", "s3cret"),
        ("bearer s3cret", "s3cret"),  # RFC 6750: the scheme is case-insensitive
        ("BEARER   s3cret  ", "s3cret"),
        ("Bearer ", ""),  # the scheme alone: a token that matches no key
        ("Bearer", None),
        ("Basic dXNlcjpwYXNz", None),
        (None, None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(request_with(header)) == token


def test_keys_compare_whole():
    assert key_matches("s3cret", "s3cret")
    assert not key_matches("s3cre", "s3cret") and not key_matches("", "s3cret")
