"""The FastAPI application: wiring, body limits and error mapping.

Routes live in ``api.py`` (JSON under ``/api/``, documented at ``/docs`` and ``/openapi.json``) and
``pages.py`` (server-rendered HTML). Pages never render untrusted text client-side: Jinja2 autoescaping
turns a ``<script>`` in a response into visible text, and the small script on the labelling page only
reads data attributes and calls the JSON API.

Who is asking (tokens, CSRF, the `User`/`Admin` route dependencies) and the templates live in ``web.py``;
this module adds the body limits (`rlhfkit.body_limit.BodyLimit`, the middleware `rlhfkit serve` uses too)
and the error mapping, and includes the routers.
"""

from __future__ import annotations

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
from rlhfkit.body_limit import BodyLimit

HERE = Path(__file__).parent
MAX_BODY = 1 << 20  # 1 MiB for labels and forms
MAX_UPLOAD = 64 << 20  # 64 MiB for campaign creation (a candidates file)
BODY_TIMEOUT_S = 60.0  # a 64 MiB upload needs time on a slow link; a stalled body is still cut off
UPLOAD_PATHS = ("/api/campaigns", "/admin/campaigns")


def body_limit(scope: dict) -> int:
    """Largest body for a request: campaign uploads may be large, everything else is a label or a form."""
    return MAX_UPLOAD if scope["path"] in UPLOAD_PATHS else MAX_BODY


def create_app(db: str | Store) -> FastAPI:
    """Build the web app over a database URL (or an open Store). Tables are created if missing."""
    store = db if isinstance(db, Store) else open_store(db)
    app = FastAPI(
        title="rlhfkit annotate",
        description="Compare model responses; export comparisons for reward-model training.",
        version="1",
    )
    app.state.store = store
    app.add_middleware(BodyLimit, max_bytes=body_limit, timeout_s=BODY_TIMEOUT_S)
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
