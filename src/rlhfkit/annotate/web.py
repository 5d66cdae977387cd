"""What every route of the annotation app shares: the page templates, and who is asking.

Authentication: each person has a random token (only its SHA-256 is stored). A login link
``/login?token=...`` puts it in an HttpOnly, SameSite=Strict cookie; scripts send
``Authorization: Bearer TOKEN``. No or unknown token -> 401; an annotator asking for admin routes -> 403.

CSRF: SameSite=Strict is not enough (another port of the same host is the same *site*), so every
state-changing request authenticated by the cookie must also (a) carry no foreign ``Origin`` (or
``Referer``) and (b) prove it was made by one of our pages: a ``csrf_token`` form field or an
``X-CSRF-Token`` header equal to ``csrf_token(login token)``, a hash a page embeds and another site cannot
compute (the login token is 192 random bits in an HttpOnly cookie). Requests with ``Authorization: Bearer``
are scripts, which a browser never sends on its own, so they need neither. A failure is 403.

``api.py`` and ``pages.py`` import their dependencies (``User``, ``Admin``) from here and ``app.py`` wires
them into the application, so the three modules import in one direction only.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from rlhfkit.annotate.campaigns import AnnotateError, authenticate
from rlhfkit.annotate.store import Annotator, Store
from rlhfkit.bearer import bearer_token

COOKIE = "rlhfkit_token"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def request_token(request: Request) -> str | None:
    token = bearer_token(request)
    return token if token is not None else request.cookies.get(COOKIE)


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
    if request.method in SAFE_METHODS or bearer_token(request) is not None:
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


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "user": None}, status_code=status
    )
