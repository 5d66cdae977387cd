"""The one ASGI middleware that reads request bodies for both servers (`rlhfkit serve`, `rlhfkit annotate`).

Why before the app: an oversized or never-finished body must cost one bounded buffer and a short wait, not
parsing, validation or a connection held forever. So, before any route runs:

- a declared `Content-Length` that is not a non-negative integer: 400;
- a body over the limit, declared or streamed without a `Content-Length`: 413 (the connection closes, since
  the rest of the body is never read);
- a body that has not fully arrived within `timeout_s`: 408 (a client that declares a large body and sends a
  trickle cannot hold a connection open).

The body is then replayed to the app as one message; later `receive()` calls go straight to the server, so a
route can still learn that its client has disconnected. Each server shapes its own error bodies (`render`):
OpenAI's `{"error": {...}}` for serve, FastAPI's `{"detail": ...}` for the annotation app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

Render = Callable[[int, str, "str | None"], dict]  # (status, message, code) -> JSON error body


def detail_body(status: int, message: str, code: str | None) -> dict:
    """FastAPI's error shape."""
    return {"detail": message}


class BodyLimit:
    """ASGI middleware: the whole body, within `max_bytes` and `timeout_s`, before the app sees the request.

    `max_bytes` is a number, or a function of the ASGI scope (a larger limit for upload routes)."""

    def __init__(
        self,
        app: Any,
        max_bytes: int | Callable[[dict], int],
        timeout_s: float,
        render: Render = detail_body,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.render = render

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        body = await self._read(scope, receive, send)
        if body is None:
            return  # refused (already answered) or the client went away
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, scope: dict, receive: Callable, send: Callable) -> bytes | None:
        limit = self.max_bytes(scope) if callable(self.max_bytes) else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
                if size < 0:
                    raise ValueError
            except ValueError:
                await self._refuse(send, 400, "Invalid Content-Length header.", None)
                return None
            if size > limit:
                await self._refuse(send, 413, _too_large(limit), "request_too_large")
                return None
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._refuse(send, 413, _too_large(limit), "request_too_large")
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            message = (
                f"The request body did not arrive within {self.timeout_s:g} seconds ({size} bytes received)."
            )
            await self._refuse(send, 408, message, "request_timeout")
            return None

    async def _refuse(self, send: Callable, status: int, message: str, code: str | None) -> None:
        # The rest of the body stays unread, so the connection cannot carry another request: close it.
        await send_json(send, status, self.render(status, message, code), close=True)


def _too_large(limit: int) -> str:
    return f"The request body is larger than this server's limit of {limit} bytes."


async def send_json(
    send: Callable, status: int, body: dict, close: bool = False, headers: list | None = None
) -> None:
    """A complete JSON response straight through ASGI `send`; `close` asks the client to drop the connection."""
    data = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": data})
