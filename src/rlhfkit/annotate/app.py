"""The FastAPI application: wiring, body limits and error mapping.

Routes live in ``api.py`` (JSON under ``/api/``, documented at ``/docs`` and ``/openapi.json``) and
``pages.py`` (server-rendered HTML). Pages never render untrusted text client-side: Jinja2 autoescaping
turns a ``<script>`` in a response into visible text, and the small script on the labelling page only
reads data attributes and calls the JSON API.

Who is asking (tokens, CSRF, the `User`/`Admin` route dependencies) and the templates live in ``web.py``;
this module adds the body limits and the error mapping and includes the routers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError

from rlhfkit.annotate import api, pages
from rlhfkit.annotate.campaigns import AnnotateError
from rlhfkit.annotate.store import Store, open_store
from rlhfkit.annotate.web import error_page

HERE = Path(__file__).parent
MAX_BODY = 1 << 20  # 1 MiB for labels and forms
MAX_UPLOAD = 64 << 20  # 64 MiB for campaign creation (a candidates file)
UPLOAD_PATHS = ("/api/campaigns", "/admin/campaigns")


class BodyLimit:
    """ASGI middleware: answer 413 to bodies over the limit (declared or streamed) before any parsing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = MAX_UPLOAD if scope["path"] in UPLOAD_PATHS else MAX_BODY
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > limit
        except ValueError:
            await _plain(send, 400, "invalid Content-Length header")
            return
        if too_big:
            await _plain(send, 413, f"request body over {limit} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _plain(send, 413, f"request body over {limit} bytes")
                return
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _plain(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(db: str | Store) -> FastAPI:
    """Build the web app over a database URL (or an open Store). Tables are created if missing."""
    store = db if isinstance(db, Store) else open_store(db)
    app = FastAPI(
        title="rlhfkit annotate",
        description="Compare model responses; export comparisons for reward-model training.",
        version="1",
    )
    app.state.store = store
    app.add_middleware(BodyLimit)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.exception_handler(AnnotateError)
    async def _annotate_error(request: Request, exc: AnnotateError) -> Response:
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        return error_page(request, exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input, which fails to render when it holds NaN or a lone
        # surrogate (a 500); where and what is enough.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": _message(e), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": _encodable(detail)}, status_code=422)

    @app.exception_handler(DataError)
    async def _refused_by_database(request: Request, exc: DataError) -> Response:
        # e.g. PostgreSQL cannot store a NUL character in text; SQLite can, so the request is valid JSON
        # that only this backend refuses. Nothing was written (the transaction rolled back).
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        return await _annotate_error(request, AnnotateError(f"the database refused a value: {reason}", 422))

    @app.exception_handler(UnicodeEncodeError)
    async def _bad_text(request: Request, exc: UnicodeEncodeError) -> Response:
        return await _annotate_error(
            request, AnnotateError("text is not valid Unicode (a lone surrogate)", 422)
        )

    return app


def _message(error: dict) -> str:
    reason = (error.get("ctx") or {}).get("error")
    return f"{error.get('msg', '')}: {reason}" if reason else str(error.get("msg", ""))


def _encodable(value: Any) -> Any:
    """`value` with every string made encodable (lone surrogates replaced), for error messages."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    return value
