"""The FastAPI application: wiring, authentication, body limits and error mapping.

Routes live in ``api.py`` (JSON under ``/api/``, documented at ``/docs`` and ``/openapi.json``) and
``pages.py`` (server-rendered HTML). Pages never render untrusted text client-side: Jinja2 autoescaping
turns a ``<script>`` in a response into visible text, and the small script on the labelling page only
reads data attributes and calls the JSON API.

Authentication: each person has a random token (only its SHA-256 is stored). A login link
``/login?token=...`` puts it in an HttpOnly, SameSite=Strict cookie; scripts send
``Authorization: Bearer TOKEN``. No or unknown token -> 401; an annotator asking for admin routes -> 403.

CSRF: SameSite=Strict is not enough (another port of the same host is the same *site*), so every
state-changing request authenticated by the cookie must also (a) carry no foreign ``Origin`` (or
``Referer``) and (b) prove it was made by one of our pages: a ``csrf_token`` form field or an
``X-CSRF-Token`` header equal to ``csrf_token(login token)``, a hash a page embeds and another site cannot
compute (the login token is 192 random bits in an HttpOnly cookie). Requests with ``Authorization: Bearer``
are scripts, which a browser never sends on its own, so they need neither. A failure is 403.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool

from rlhfkit.annotate.campaigns import AnnotateError, authenticate
from rlhfkit.annotate.store import Annotator, Store, open_store

HERE = Path(__file__).parent
COOKIE = "rlhfkit_token"
MAX_BODY = 1 << 20  # 1 MiB for labels and forms
MAX_UPLOAD = 64 << 20  # 64 MiB for campaign creation (a candidates file)
UPLOAD_PATHS = ("/api/campaigns", "/admin/campaigns")

templates = Jinja2Templates(directory=str(HERE / "templates"))


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


def request_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def csrf_token(login_token: str) -> str:
    """The anti-CSRF token of a session: derived from its secret login token, so nothing is stored."""
    return hashlib.sha256(b"rlhfkit-annotate-csrf:" + login_token.encode("utf-8")).hexdigest()[:32]


def page_csrf(request: Request) -> str:
    """The CSRF token pages embed (forms' hidden field, the labelling script's header)."""
    token = request_token(request)
    return csrf_token(token) if token else ""


def _netloc(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return "?"


async def check_csrf(request: Request, login_token: str) -> None:
    """403 unless a cookie-authenticated state-changing request comes from one of our own pages."""
    if request.method in SAFE_METHODS or request.headers.get("authorization", "").lower().startswith(
        "bearer "
    ):
        return
    # This server's names: its Host, and the host a reverse proxy was asked for (X-Forwarded-Host: a header
    # a cross-site page cannot make the browser send).
    hosts = {request.headers.get("host", "").lower()}
    hosts |= {h.strip().lower() for h in request.headers.get("x-forwarded-host", "").split(",") if h.strip()}
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value is not None and (value == "null" or _netloc(value) not in hosts):
            raise AnnotateError(f"cross-site request refused ({header} {value!r} is not this server)", 403)
    given = request.headers.get(CSRF_HEADER, "")
    if not given and "form" in request.headers.get("content-type", ""):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else ""
    if not hmac.compare_digest(given.encode(), csrf_token(login_token).encode()):
        raise AnnotateError("missing or wrong CSRF token: reload the page and try again", 403)


def _authenticate(store: Store, token: str) -> Annotator | None:
    with store.transaction() as session:
        return authenticate(session, token)


async def current_user(request: Request) -> Annotator:
    """FastAPI dependency: the authenticated person, or 401 (403 for a cross-site cookie request)."""
    token = request_token(request)
    if not token:
        raise AnnotateError(
            "login required: open your personal login link, or send 'Authorization: Bearer TOKEN'", 401
        )
    store: Store = request.app.state.store
    user = await run_in_threadpool(_authenticate, store, token)  # a database read: off the event loop
    if user is None:
        raise AnnotateError("unknown or revoked token", 401)
    await check_csrf(request, token)
    return user


async def require_admin(request: Request) -> Annotator:
    user = await current_user(request)
    if user.role != "admin":
        raise AnnotateError("admins only", 403)
    return user


User = Annotated[Annotator, Depends(current_user)]  # route parameter: any logged-in person
Admin = Annotated[Annotator, Depends(require_admin)]  # route parameter: an admin


def create_app(db: str | Store) -> FastAPI:
    """Build the web app over a database URL (or an open Store). Tables are created if missing."""
    from rlhfkit.annotate import api, pages

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


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "user": None}, status_code=status
    )
