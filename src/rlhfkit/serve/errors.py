"""Errors in OpenAI's exact shape: `{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes.

Why: clients built for the hosted API (the official `openai` package first of all) turn the status code into
an exception class (400 -> `BadRequestError`, 401 -> `AuthenticationError`, 404 -> `NotFoundError`) and read
`param` / `code` from the body, so both must be what the hosted API sends. Every failure path of the server
(our own checks, unknown routes, wrong methods, unexpected exceptions) ends in `error_response`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhfkit.body_limit import send_json

INVALID_REQUEST = "invalid_request_error"
log = logging.getLogger("rlhfkit.serve")


class APIError(Exception):
    """A request the server refuses; becomes an OpenAI-shaped JSON error with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def openai_error_body(status: int, message: str, code: str | None) -> dict:
    """The body `rlhfkit.body_limit.BodyLimit` sends when it refuses a body (400, 408 or 413)."""
    return APIError(status, message, code=code).body()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def context_length_exceeded(limit: int, prompt_tokens: int, max_tokens: int, param: str) -> APIError:
    return bad_request(
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in your prompt; {max_tokens} for the "
        "completion). Please reduce your prompt; or completion length.",
        param=param,
        code="context_length_exceeded",
    )


def missing_api_key() -> APIError:
    return APIError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    )


def invalid_api_key(given: str) -> APIError:
    shown = given if len(given) <= 8 else f"{given[:3]}***{given[-4:]}"
    return APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")


def error_response(error: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    return JSONResponse(error.body(), status_code=error.status, headers={**headers, **error.headers})


def install_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through `error_response`."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(APIError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        message = f"The server had an error while processing your request ({type(exc).__name__}: {exc})"
        return error_response(APIError(500, message, type="server_error"))


class ServerErrorGuard:
    """ASGI middleware: an exception that escaped a route becomes a 500 *response*, and the connection stays;
    a request cancelled by the server's shutdown gets a 503.

    Starlette's own last-resort handler re-raises after answering, and uvicorn then drops the keep-alive
    connection, which failed the client's next request too."""

    def __init__(self, app: Any) -> None:
        self.app = app

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

        try:
            await self.app(scope, receive, tracked_send)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still in flight when the shutdown grace period is over: say so
            # (503 and Retry-After, which OpenAI clients retry on) and end quietly; this task is the
            # request's own and nothing else waits on it.
            if not started:
                error = APIError(
                    503, "The server is shutting down; please retry shortly.", type="server_error"
                )
                await send_json(send, 503, error.body(), close=True, headers=[(b"retry-after", b"1")])
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope["method"], scope.get("path"))
            if not started:
                message = (
                    f"The server had an error while processing your request ({type(exc).__name__}: {exc})"
                )
                await send_json(send, 500, APIError(500, message, type="server_error").body())
