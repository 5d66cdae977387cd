"""Per-request limits of `rlhfkit serve`, and the ASGI guard that enforces the transport-level ones.

Why: one small request must not be able to hold the server. Without limits a 1 KB body (64 prompts x
n=128 x 64 tokens) asks for 8,192 choices, an 8 MB prompt ties up tokenization, and a client that declares
a large Content-Length and sends little holds a connection open forever. Every limit answers with an
OpenAI-shaped 4xx naming what was too large, before any model work starts:

| limit | default | answer |
|---|---|---|
| `max_body_bytes`: request body size | 1 MiB | 413 `request_too_large` |
| `body_timeout_s`: time to receive the whole body | 10 s | 408 `request_timeout` |
| `max_json_depth`: nesting of arrays/objects in the body | 32 | 400 `invalid_value` (a lone-surrogate string too) |
| `max_choices`: prompts x n of one request | 128 | 400 `request_too_large` (param `n`) |
| `max_request_tokens`: sum over choices of prompt tokens + max_tokens | 65,536 | 400 `request_too_large` (param `max_tokens`) |
| `default_chat_max_tokens`: a chat request without max_tokens | 512 (or the room the context leaves, if less) | - |

The guard (`RequestGuard`) also turns an exception that escaped a route into a 500 *response*, so the
connection stays usable: Starlette's own last-resort handler re-raises after answering, and uvicorn then
drops the keep-alive connection, which failed the client's next request too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rlhfkit.serve.errors import APIError, bad_request

log = logging.getLogger("rlhfkit.serve")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; see the module docstring for the answers to each."""

    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0
    max_json_depth: int = 32
    max_choices: int = 128
    max_request_tokens: int = 65_536
    default_chat_max_tokens: int = 512

    def check_request(self, prompt_lengths: list[int], n: int, max_tokens: int) -> None:
        """Refuse a request whose choices (prompts x n) or total tokens exceed the limits."""
        choices = len(prompt_lengths) * n
        if choices > self.max_choices:
            raise bad_request(
                f"This request asks for {choices} choices ({len(prompt_lengths)} prompt(s) x n={n}); this "
                f"server answers at most {self.max_choices} choices per request. Lower 'n' or send fewer "
                "prompts per request.",
                param="n",
                code="request_too_large",
            )
        tokens = n * sum(length + max_tokens for length in prompt_lengths)
        if tokens > self.max_request_tokens:
            raise bad_request(
                f"This request asks for {tokens} tokens in all (prompt plus max_tokens={max_tokens}, over "
                f"{choices} choices); this server allows at most {self.max_request_tokens} per request. "
                "Lower 'max_tokens' or 'n', or split the request.",
                param="max_tokens",
                code="request_too_large",
            )


def decode_json(raw: bytes, limits: Limits) -> Any:
    """The body as JSON, or a 400: not JSON, nested deeper than `max_json_depth`, or with broken Unicode."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    except RecursionError:  # the C parser gives up on very deep nesting
        body = None
        _too_deep(limits)
    _check_tree(body, limits)
    return body


def _too_deep(limits: Limits) -> None:
    raise bad_request(
        f"The JSON body is nested more than {limits.max_json_depth} levels deep.", code="invalid_value"
    )


def _check_tree(body: Any, limits: Limits) -> None:
    """Depth and Unicode check without recursion (a deep document must not exhaust the Python stack)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # "\ud800" escapes decode to lone surrogates, which no tokenizer takes
                raise bad_request(
                    "The JSON body contains an invalid Unicode escape (a lone surrogate).",
                    code="invalid_value",
                ) from None
            continue
        if isinstance(value, dict | list):
            if depth > limits.max_json_depth:
                _too_deep(limits)
            children = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            for key, child in children:
                if key is not None:
                    stack.append((key, depth))
                if isinstance(child, dict | list | str):
                    stack.append((child, depth + 1))


class RequestGuard:
    """ASGI middleware: body size and time limits before any parsing; a 500 that keeps the connection."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            body = await self._read_body(scope, receive, send)
            if body is None:
                return  # refused (already answered) or the client went away
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            downstream = replay
        else:
            downstream = receive
        try:
            await self.app(scope, downstream, tracked_send)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope["method"], scope.get("path"))
            if not started:
                message = (
                    f"The server had an error while processing your request ({type(exc).__name__}: {exc})"
                )
                await _answer(send, APIError(500, message, type="server_error"))

    async def _read_body(self, scope: dict, receive: Callable, send: Callable) -> bytes | None:
        limit = self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
                if size < 0:
                    raise ValueError
            except ValueError:
                await _answer(send, bad_request("Invalid Content-Length header."), close=True)
                return None
            if size > limit:
                await _answer(send, _too_large(limit), close=True)
                return None
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await _answer(send, _too_large(limit), close=True)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            error = APIError(
                408,
                f"The request body did not arrive within {self.limits.body_timeout_s:g} seconds "
                f"({size} bytes received).",
                code="request_timeout",
            )
            await _answer(send, error, close=True)
            return None


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes.",
        code="request_too_large",
    )


async def _answer(send: Callable, error: APIError, close: bool = False) -> None:
    """Send `error` as a complete JSON response; `close` when the rest of the body was not read."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
