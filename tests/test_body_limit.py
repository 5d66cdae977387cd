"""One body-limit middleware for both servers (issue #27): the annotation app refuses what serve refuses.

Before, the annotation app had its own copy, which let a negative Content-Length through and waited forever
for a body that never finished; serve's copy refused both. Each server keeps its own error shape.
"""

from __future__ import annotations

import asyncio
import json

import pytest

TIMEOUT_S = 0.3


def serve_app():
    from rlhfkit.serve import create_app
    from rlhfkit.serve.limits import Limits

    app = create_app({}, limits=Limits(max_body_bytes=1 << 20, body_timeout_s=TIMEOUT_S))
    return app, "/v1/completions", lambda body: body["error"]["code"]


def annotate_app(tmp_path, monkeypatch):
    from rlhfkit.annotate import app as annotate

    monkeypatch.setattr(annotate, "BODY_TIMEOUT_S", TIMEOUT_S, raising=False)
    app = annotate.create_app(str(tmp_path / "annotate.db"))
    return app, "/api/campaigns/c1/labels", lambda body: "detail"


@pytest.fixture(params=["serve", "annotate"])
def server(request, tmp_path, monkeypatch):
    return serve_app() if request.param == "serve" else annotate_app(tmp_path, monkeypatch)


def call(app, path: str, headers: dict, chunks: list[bytes], stall: bool = False) -> tuple[int, dict]:
    """One request straight through ASGI; `stall`: the client stops sending after `chunks`."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    pending = list(chunks)
    sent: list[dict] = []

    async def receive() -> dict:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}
        await asyncio.sleep(3600)  # a client that never finishes its body
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), TIMEOUT_S + 5)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def test_a_negative_content_length_is_400(server):
    app, path, _ = server
    status, _ = call(app, path, {"content-length": "-1", "content-type": "application/json"}, [b"{}"])
    assert status == 400


def test_a_body_over_the_limit_is_413_declared_or_streamed(server):
    app, path, shape = server
    big = b"x" * ((1 << 20) + 1)
    status, body = call(app, path, {"content-length": str(len(big))}, [b""])
    assert status == 413 and shape(body) in ("request_too_large", "detail") and shape(body) in str(body)
    status, _ = call(app, path, {}, [big[: 1 << 19], big[1 << 19 :]])  # no Content-Length
    assert status == 413


def test_a_body_that_stops_arriving_is_408(server):
    app, path, _ = server
    status, body = call(app, path, {"content-length": "5000"}, [b'{"a"'], stall=True)
    assert status == 408
    assert "did not arrive within" in json.dumps(body)
