"""Server-rendered HTML pages: login, the annotator's home, the labelling page and the admin dashboard.

Pages read the database directly and post forms (admin) or call the JSON API from a small script
(labelling); every piece of user-supplied text goes through Jinja2's autoescaping.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from rlhfkit.annotate.api import assignment_view
from rlhfkit.annotate.campaigns import (
    FLAGS,
    AnnotateError,
    CampaignSpec,
    add_annotator,
    annotator_progress,
    authenticate,
    campaign_progress,
    create_campaign,
    get_campaign,
    login_url,
    next_assignment,
    rotate_token,
)
from rlhfkit.annotate.candidates import parse_lines
from rlhfkit.annotate.stats import campaign_stats
from rlhfkit.annotate.store import Annotator, Campaign, Store
from rlhfkit.annotate.web import COOKIE, Admin, User, page_csrf, templates
from rlhfkit.errors import RlhfkitError

router = APIRouter(include_in_schema=False)


def _store(request: Request) -> Store:
    return request.app.state.store


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    context = {"csrf": page_csrf(request), **context}  # forms and the labelling script send it back
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: User) -> Response:
    if user.role == "admin":
        return RedirectResponse("/admin", status_code=303)
    with _store(request).transaction() as s:
        me = s.get(Annotator, user.id)
        campaigns = [
            (c, annotator_progress(s, c, me)) for c in s.scalars(select(Campaign).order_by(Campaign.id))
        ]
    return _render(request, "home.html", {"user": user, "campaigns": campaigns})


@router.get("/login")
def login(request: Request, token: str = "") -> Response:
    with _store(request).transaction() as s:
        user = authenticate(s, token)
    if user is None:
        raise AnnotateError("this login link is not valid (ask your admin for a new one)", 401)
    response = RedirectResponse("/", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=90 * 86400)
    return response


@router.get("/logout")
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/c/{name}", response_class=HTMLResponse)
def label_page(name: str, request: Request, user: User) -> Response:
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        me = s.get(Annotator, user.id)
        view = assignment_view(s, campaign, me, next_assignment(s, campaign, me))
    k = len(view.get("responses", []))
    context = {"user": user, "campaign": campaign, "view": view, "k": k, "flags": FLAGS}
    return _render(request, "label.html", context)


# ------------------------------------------------------------------------------------------------- admin


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, user: Admin) -> Response:
    with _store(request).transaction() as s:
        campaigns = [(c, campaign_progress(s, c)) for c in s.scalars(select(Campaign).order_by(Campaign.id))]
        people = list(s.scalars(select(Annotator).order_by(Annotator.id)))
    return _render(request, "admin.html", {"user": user, "campaigns": campaigns, "people": people})


async def _read_upload(upload: UploadFile | None) -> tuple[str, str] | None:
    if upload is None or not upload.filename:
        return None
    raw = await upload.read()
    try:
        return upload.filename, raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AnnotateError(f"{upload.filename}: not UTF-8 text", 422) from None


@router.post("/admin/campaigns")
async def admin_create_campaign(
    request: Request,
    user: Admin,
    name: Annotated[str, Form(max_length=200)],
    candidates: Annotated[UploadFile, File()],
    gold: Annotated[UploadFile | None, File()] = None,
    instructions: Annotated[str, Form(max_length=100_000)] = "",
    overlap: Annotated[int, Form(ge=1, le=1000)] = 1,
    mode: Annotated[str, Form(pattern="^(rank|pairwise)$")] = "rank",
) -> Response:
    uploaded = await _read_upload(candidates)
    if uploaded is None:
        raise AnnotateError("candidates: choose a candidates JSONL file", 422)
    gold_upload = await _read_upload(gold)
    try:
        records = parse_lines(uploaded[1], uploaded[0])
        gold_records = parse_lines(gold_upload[1], gold_upload[0], gold=True) if gold_upload else []
    except RlhfkitError as exc:
        raise AnnotateError(str(exc), 422) from None
    spec = CampaignSpec(name, records, instructions, overlap, mode, gold_records, source=uploaded[0])
    with _store(request).transaction() as s:
        campaign = create_campaign(s, spec)
    return RedirectResponse(f"/admin/c/{quote(campaign.name, safe='')}", status_code=303)


@router.post("/admin/annotators", response_class=HTMLResponse)
def admin_add_annotator(
    request: Request,
    user: Admin,
    name: Annotated[str, Form(max_length=100)],
    role: Annotated[str, Form(pattern="^(annotator|admin)$")] = "annotator",
) -> Response:
    with _store(request).transaction() as s:
        person, token = add_annotator(s, name, role)
    link = login_url(str(request.base_url), token)
    return _render(request, "link.html", {"user": user, "person": person.name, "link": link})


@router.post("/admin/annotators/{name:path}/token", response_class=HTMLResponse)
def admin_rotate(name: str, request: Request, user: Admin) -> Response:
    with _store(request).transaction() as s:
        token = rotate_token(s, name)
    link = login_url(str(request.base_url), token)
    return _render(request, "link.html", {"user": user, "person": name, "link": link})


@router.get("/admin/c/{name}", response_class=HTMLResponse)
def admin_campaign(name: str, request: Request, user: Admin) -> Response:
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        stats = campaign_stats(s, campaign)
    return _render(request, "campaign.html", {"user": user, "campaign": campaign, "stats": stats})
