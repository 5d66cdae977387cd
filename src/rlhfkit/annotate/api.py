"""JSON API under ``/api/``: everything the pages do, scriptable (OpenAPI spec at ``/openapi.json``).

Each handler runs one database transaction; errors from campaigns.py carry their HTTP status.
Annotators see only their own queue and labels; campaign creation, annotators, stats and export need
the admin role.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import select

from rlhfkit.annotate.campaigns import (
    AnnotateError,
    CampaignSpec,
    Judgement,
    add_annotator,
    annotator_progress,
    campaign_progress,
    create_campaign,
    get_campaign,
    login_url,
    next_assignment,
    rotate_token,
    skip,
    submit_label,
    undo_last,
)
from rlhfkit.annotate.candidates import parse_record
from rlhfkit.annotate.export import export_records, to_jsonl
from rlhfkit.annotate.stats import campaign_stats
from rlhfkit.annotate.store import Annotator, Assignment, Campaign, Item, Label, Store, iso
from rlhfkit.annotate.web import Admin, User
from rlhfkit.errors import RlhfkitError


class CheckedJSONRequest(Request):
    """Request bodies as strict JSON: no NaN/Infinity, no lone surrogates, no NUL characters.

    Python's `json` accepts all three, but none can be stored and served back everywhere: NaN breaks every
    later JSON answer that contains it, a lone surrogate cannot be encoded as UTF-8, and PostgreSQL refuses
    NUL in text. Refusing them on the way in (422, as any malformed JSON) keeps the store clean on both
    backends."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            value = json.loads(await self.body(), parse_constant=_no_constant)
            try:
                _check_strings(value)
            except ValueError as exc:
                raise json.JSONDecodeError(str(exc), "", 0) from None
            self._json = value
        return self._json


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", "", 0)


def _check_strings(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("text may not contain NUL characters")
            item.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class CheckedJSONRoute(APIRoute):
    """Routes whose handlers see a `CheckedJSONRequest` (FastAPI answers its JSONDecodeError with a 422)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(CheckedJSONRequest(request.scope, request.receive))

        return checked


router = APIRouter(prefix="/api", tags=["api"], route_class=CheckedJSONRoute)
BIG = 2**62


class LabelIn(BaseModel):
    assignment_id: int = Field(ge=1, le=BIG)
    ranking: list[int] = Field(description="item completion indices, best first", max_length=9)
    ties: list[list[int]] = Field(default_factory=list, max_length=64)
    strength: int = Field(default=2, description="1 slightly, 2 clearly, 3 much better")
    flags: list[str] = Field(default_factory=list, max_length=8)
    rationale: str = Field(default="", max_length=10_000)
    seconds: float | None = Field(default=None, description="active seconds measured by the client")


class AssignmentRef(BaseModel):
    assignment_id: int = Field(ge=1, le=BIG)


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    candidates: list[Any] = Field(description="candidates records (prompt + K completions)")
    instructions: str = Field(default="", max_length=100_000)
    overlap: int = Field(default=1, ge=1, le=1000)
    mode: str = Field(default="rank", pattern="^(rank|pairwise)$")
    gold: list[Any] = Field(default_factory=list, description="candidates records with a known 'ranking'")
    seed: int = Field(default=0, ge=0, le=BIG)
    lease_seconds: int = Field(default=3600, ge=10, le=7 * 86400)


class AnnotatorIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(default="annotator", pattern="^(annotator|admin)$")


def _store(request: Request) -> Store:
    return request.app.state.store


def _me(session: Any, user: Annotator) -> Annotator:
    me = session.get(Annotator, user.id)
    assert me is not None
    return me


def parse_candidates(records: list[Any], field: str, gold: bool = False) -> list[Any]:
    try:
        return [parse_record(r, field, i, gold=gold) for i, r in enumerate(records, start=1)]
    except RlhfkitError as exc:
        raise AnnotateError(str(exc), 422) from None


def assignment_view(
    session: Any, campaign: Campaign, user: Annotator, a: Assignment | None
) -> dict[str, Any]:
    """What a labelling screen needs: the item with responses in this annotator's display order."""
    progress = annotator_progress(session, campaign, user)
    if a is None:
        return {"done": True, "progress": progress}
    item = session.get(Item, a.item_id)
    responses = [
        {"position": p, "index": idx, "messages": item.completions[idx]}
        for p, idx in enumerate(a.display_order)
    ]
    return {
        "done": False,
        "assignment_id": a.id,
        "attempt": a.attempt,
        "item": {"id": item.key, "category": item.category, "prompt": item.prompt},
        "responses": responses,
        "display_order": list(a.display_order),
        "mode": campaign.mode,
        "progress": progress,
    }


@router.get("/me")
def me(user: User) -> dict[str, Any]:
    return {"name": user.name, "role": user.role}


@router.get("/campaigns")
def list_campaigns(request: Request, user: User) -> list[dict[str, Any]]:
    with _store(request).transaction() as s:
        rows = []
        for c in s.scalars(select(Campaign).order_by(Campaign.id)):
            row = {"name": c.name, "mode": c.mode, "overlap": c.overlap, "instructions": c.instructions}
            row["progress"] = (
                campaign_progress(s, c) if user.role == "admin" else annotator_progress(s, c, _me(s, user))
            )
            rows.append(row)
        return rows


@router.post("/campaigns", status_code=201)
def post_campaign(body: CampaignIn, request: Request, user: Admin) -> dict[str, Any]:
    spec = CampaignSpec(
        name=body.name,
        candidates=parse_candidates(body.candidates, "candidates"),
        instructions=body.instructions,
        overlap=body.overlap,
        mode=body.mode,
        gold=parse_candidates(body.gold, "gold", gold=True),
        seed=body.seed,
        lease_seconds=body.lease_seconds,
        source="api",
    )
    with _store(request).transaction() as s:
        campaign = create_campaign(s, spec)
        return {"name": campaign.name, "progress": campaign_progress(s, campaign)}


@router.get("/campaigns/{name}/next")
def get_next(name: str, request: Request, user: User) -> dict[str, Any]:
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        me = _me(s, user)
        return assignment_view(s, campaign, me, next_assignment(s, campaign, me))


@router.post("/campaigns/{name}/labels", status_code=201)
def post_label(name: str, body: LabelIn, request: Request, user: User) -> dict[str, Any]:
    judgement = Judgement(body.ranking, body.ties, body.strength, body.flags, body.rationale, body.seconds)
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        label = submit_label(s, campaign, _me(s, user), body.assignment_id, judgement)
        return {"label_id": label.id, "ranking": label.ranking, "ties": label.ties, "seconds": label.seconds}


@router.post("/campaigns/{name}/skip")
def post_skip(name: str, body: AssignmentRef, request: Request, user: User) -> dict:
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        a = skip(s, campaign, _me(s, user), body.assignment_id)
        return {"assignment_id": a.id, "state": a.state}


@router.post("/campaigns/{name}/undo")
def post_undo(name: str, request: Request, user: User) -> dict[str, Any]:
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        a = undo_last(s, campaign, _me(s, user))
        return {"assignment_id": a.id, "state": a.state, "attempt": a.attempt}


@router.get("/campaigns/{name}/labels")
def get_labels(
    name: str,
    request: Request,
    user: User,
    annotator: str | None = None,
    include_retracted: bool = False,
) -> list[dict[str, Any]]:
    """Your own labels; admins may see everyone's (optionally one annotator's)."""
    if user.role != "admin" and annotator not in (None, user.name):
        raise AnnotateError("you can only see your own labels", 403)
    with _store(request).transaction() as s:
        campaign = get_campaign(s, name)
        query = (
            select(Label, Annotator.name, Item.key)
            .join(Annotator, Annotator.id == Label.annotator_id)
            .join(Item, Item.id == Label.item_id)
            .where(Label.campaign_id == campaign.id)
            .order_by(Label.id)
        )
        if user.role != "admin":
            query = query.where(Label.annotator_id == user.id)
        elif annotator is not None:
            query = query.where(Annotator.name == annotator)
        if not include_retracted:
            query = query.where(Label.retracted_at.is_(None))
        return [
            {
                "label_id": lb.id,
                "item": key,
                "annotator": who,
                "assignment_id": lb.assignment_id,
                "ranking": lb.ranking,
                "ties": lb.ties,
                "strength": lb.strength,
                "flags": lb.flags,
                "rationale": lb.rationale,
                "display_order": lb.display_order,
                "seconds": lb.seconds,
                "created_at": iso(lb.created_at),
                "retracted_at": iso(lb.retracted_at),
            }
            for lb, who, key in s.execute(query)
        ]


@router.get("/campaigns/{name}/stats")
def get_stats(name: str, request: Request, user: Admin) -> dict[str, Any]:
    with _store(request).transaction() as s:
        return campaign_stats(s, get_campaign(s, name))


@router.get("/campaigns/{name}/export", response_class=Response)
def get_export(
    name: str,
    request: Request,
    user: Admin,
    votes: Annotated[str, Query(pattern="^(majority|all)$")] = "majority",
    include_gold: bool = False,
) -> Response:
    """The campaign as comparisons JSONL (the format ``rlhfkit reward train`` reads)."""
    with _store(request).transaction() as s:
        records = export_records(s, get_campaign(s, name), votes=votes, include_gold=include_gold)
    return Response(
        to_jsonl(records),
        media_type="application/x-ndjson; charset=utf-8",
        headers={"content-disposition": attachment(f"{name}-{votes}.jsonl")},
    )


def attachment(filename: str) -> str:
    """A Content-Disposition for any file name: an ASCII fallback plus the exact UTF-8 name (RFC 6266/5987).

    HTTP headers are Latin-1 and may not contain CR/LF, so the raw name must never go in as is."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/annotators")
def list_annotators(request: Request, user: Admin) -> list[dict[str, Any]]:
    with _store(request).transaction() as s:
        return [
            {"name": a.name, "role": a.role, "active": a.active, "created_at": iso(a.created_at)}
            for a in s.scalars(select(Annotator).order_by(Annotator.id))
        ]


@router.post("/annotators", status_code=201)
def post_annotator(body: AnnotatorIn, request: Request, user: Admin) -> dict:
    """Create a person; the answer holds their token and login link, shown this once only."""
    with _store(request).transaction() as s:
        annotator, token = add_annotator(s, body.name, body.role)
        return {
            "name": annotator.name,
            "role": annotator.role,
            "token": token,
            "login_url": login_url(str(request.base_url), token),
        }


@router.post("/annotators/{name:path}/token")
def post_rotate(name: str, request: Request, user: Admin) -> dict[str, Any]:
    """Issue a new login link for a person (the old one stops working)."""
    with _store(request).transaction() as s:
        token = rotate_token(s, name)
        return {"name": name, "token": token, "login_url": login_url(str(request.base_url), token)}
