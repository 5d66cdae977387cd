"""Errors in OpenAI's exact shape: `{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes.

Why: clients built for the hosted API (the official `openai` package first of all) turn the status code into
an exception class (400 -> `BadRequestError`, 401 -> `AuthenticationError`, 404 -> `NotFoundError`) and read
`param` / `code` from the body, so both must be what the hosted API sends. Every failure path of the server
(our own checks, unknown routes, wrong methods, unexpected exceptions) ends in `error_response`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

INVALID_REQUEST = "invalid_request_error"


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
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


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
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


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
