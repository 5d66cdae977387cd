"""Campaigns, annotators and the work queue: everything that changes the annotation database.

Queue rules (see store.py for the locking mechanics):

* An annotator only ever sees their own assignments. ``next_assignment`` first resumes their most recently
  leased item (so a reload, or an undo, shows the same item again); otherwise it claims the earliest item
  (by campaign position) that they have never been assigned and that still has a free slot
  (``taken < overlap``). Gold (honeypot) items have no cap: every annotator gets each one once.
* A lease lasts ``campaign.lease_seconds`` and is renewed each time the item is served. Expired leases give
  their slot back so an absent annotator cannot block an item; a late submission on an expired lease is
  still stored (people's work is never thrown away), which can leave an item with one label over overlap.
* Skip frees the slot for someone else; that annotator never gets the item again.
* Undo retracts (never deletes) the annotator's last label or skip and re-opens that item for them.
* Display order is a per-(campaign, annotator, item) seeded shuffle, recorded on the assignment and label.
"""

from __future__ import annotations

import itertools
import random
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.annotate.candidates import Candidate, check_ranking
from rlhfkit.annotate.store import (
    DONE,
    EXPIRED,
    LEASED,
    MODES,
    ROLES,
    SKIPPED,
    Annotator,
    Assignment,
    Campaign,
    Item,
    Label,
    hash_token,
    new_token,
    utcnow,
)
from rlhfkit.errors import RlhfkitError

FLAGS = ("harmful", "factually_wrong", "nonsense")
MAX_RATIONALE = 10_000


class AnnotateError(RlhfkitError):
    """A refused request; ``status`` is the HTTP status the web app answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class CampaignSpec:
    """What a new campaign needs. Defaults: rank mode, each item labelled by one person, 1 h leases."""

    name: str
    candidates: list[Candidate]
    instructions: str = ""
    overlap: int = 1
    mode: str = "rank"  # "rank": order all K responses; "pairwise": one item per pair of responses
    gold: list[Candidate] | None = None
    seed: int = 0
    lease_seconds: int = 3600
    source: str = ""


# ----------------------------------------------------------------------------------------------- annotators


def has_control_characters(text: str) -> bool:
    """CR, LF, NUL, other C0/C1 controls and Unicode line/format controls: never in a name (they end up in
    HTTP headers, URLs and file names)."""
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def add_annotator(session: Session, name: str, role: str = "annotator") -> tuple[Annotator, str]:
    """Create an annotator; returns it and the one-time plain token (only its hash is stored)."""
    name = name.strip()
    if not name or len(name) > 100 or has_control_characters(name):
        raise AnnotateError("annotator name: expected 1..100 characters, no control characters", 422)
    if role not in ROLES:
        raise AnnotateError(f"role: expected one of {', '.join(ROLES)}, got {role!r}", 422)
    if session.scalar(select(Annotator).where(Annotator.name == name)):
        raise AnnotateError(f"annotator {name!r} already exists", 409)
    token = new_token()
    annotator = Annotator(name=name, role=role, token_hash=hash_token(token), created_at=utcnow())
    session.add(annotator)
    session.flush()
    return annotator, token


def rotate_token(session: Session, name: str) -> str:
    """Give an annotator a new login token (the old link stops working)."""
    if has_control_characters(name):
        raise AnnotateError(f"no annotator named {name!r}", 404)
    annotator = session.scalar(select(Annotator).where(Annotator.name == name))
    if annotator is None:
        raise AnnotateError(f"no annotator named {name!r}", 404)
    token = new_token()
    annotator.token_hash = hash_token(token)
    return token


def authenticate(session: Session, token: str | None) -> Annotator | None:
    if not token:
        return None
    annotator = session.scalar(select(Annotator).where(Annotator.token_hash == hash_token(token)))
    return annotator if annotator is not None and annotator.active else None


def login_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/login?token={token}"


# ------------------------------------------------------------------------------------------------ campaigns


def _pair_gold(gold: dict[str, Any] | None, i: int, j: int) -> dict[str, Any] | None:
    if gold is None:
        return None
    if [i, j] in gold["ties"]:
        return {"ranking": [0, 1], "ties": [[0, 1]]}
    first = gold["ranking"].index(i) < gold["ranking"].index(j)
    return {"ranking": [0, 1] if first else [1, 0], "ties": []}


def _items_for(candidate: Candidate, mode: str) -> list[dict[str, Any]]:
    """Rank mode: one item per record. Pairwise mode: one item per pair of its responses."""
    base = {"source_id": candidate.id, "prompt": candidate.prompt, "category": candidate.category}
    if mode == "rank":
        meta = dict(candidate.meta)
        return [
            {
                **base,
                "key": candidate.id,
                "completions": candidate.completions,
                "meta": meta,
                "gold": candidate.gold,
            }
        ]
    items = []
    for i, j in itertools.combinations(range(len(candidate.completions)), 2):
        key = candidate.id if len(candidate.completions) == 2 else f"{candidate.id}:{i}-{j}"
        meta = {**candidate.meta, "source_indices": [i, j]}
        completions = [candidate.completions[i], candidate.completions[j]]
        items.append(
            {
                **base,
                "key": key,
                "completions": completions,
                "meta": meta,
                "gold": _pair_gold(candidate.gold, i, j),
            }
        )
    return items


def create_campaign(session: Session, spec: CampaignSpec) -> Campaign:
    """Insert a campaign and all its items in the caller's transaction (all or nothing)."""
    name = spec.name.strip()
    if not name or len(name) > 200 or "/" in name or has_control_characters(name):
        raise AnnotateError(
            "campaign name: expected 1..200 characters without '/' or control characters", 422
        )
    if spec.mode not in MODES:
        raise AnnotateError(f"mode: expected one of {', '.join(MODES)}, got {spec.mode!r}", 422)
    if not 1 <= spec.overlap <= 1000:
        raise AnnotateError("overlap: expected an integer in 1..1000", 422)
    if not spec.candidates:
        raise AnnotateError("candidates: expected at least one record", 422)
    if session.scalar(select(Campaign).where(Campaign.name == name)):
        raise AnnotateError(f"campaign {name!r} already exists", 409)
    campaign = Campaign(
        name=name,
        instructions=spec.instructions,
        mode=spec.mode,
        overlap=spec.overlap,
        seed=spec.seed,
        lease_seconds=spec.lease_seconds,
        source=spec.source,
        created_at=utcnow(),
    )
    session.add(campaign)
    session.flush()
    regular = [it for c in spec.candidates for it in _items_for(c, spec.mode)]
    gold = [it for c in spec.gold or [] for it in _items_for(c, spec.mode)]
    for it in regular:
        it["gold"] = None  # only the gold file defines gold answers
    # Interleave gold items at seeded random positions so they cannot be spotted by position.
    order: list[dict[str, Any]] = list(regular)
    rng = random.Random(f"gold:{spec.seed}:{name}")
    for it in gold:
        order.insert(rng.randint(0, len(order)), it)
    keys: set[str] = set()
    for position, it in enumerate(order):
        if it["key"] in keys:
            raise AnnotateError(
                f"item id {it['key']!r} appears twice (candidates and gold ids must be unique)", 422
            )
        keys.add(it["key"])
        session.add(Item(campaign_id=campaign.id, position=position, taken=0, **it))
    session.flush()
    return campaign


def get_campaign(session: Session, name: str) -> Campaign:
    if has_control_characters(name):  # never a stored name (and PostgreSQL refuses NUL in a query)
        raise AnnotateError(f"no campaign named {name!r}", 404)
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise AnnotateError(f"no campaign named {name!r}", 404)
    return campaign


def display_order(campaign: Campaign, annotator_id: int, item: Item) -> list[int]:
    order = list(range(len(item.completions)))
    random.Random(f"order:{campaign.seed}:{campaign.id}:{annotator_id}:{item.id}").shuffle(order)
    return order


# ---------------------------------------------------------------------------------------------------- queue


def _claim_slot(session: Session, item: Item, campaign: Campaign) -> bool:
    """Atomically take one of the item's ``overlap`` slots; gold items are uncapped."""
    if item.gold is not None:
        session.execute(update(Item).where(Item.id == item.id).values(taken=Item.taken + 1))
        return True
    result = session.execute(
        update(Item).where(Item.id == item.id, Item.taken < campaign.overlap).values(taken=Item.taken + 1)
    )
    return result.rowcount == 1


def _release_slot(session: Session, item_id: int) -> None:
    session.execute(update(Item).where(Item.id == item_id, Item.taken > 0).values(taken=Item.taken - 1))


def expire_leases(session: Session, campaign: Campaign) -> int:
    """Give back the slots of leases that ran out; returns how many expired."""
    now = utcnow()
    stale = session.scalars(
        select(Assignment).where(
            Assignment.campaign_id == campaign.id, Assignment.state == LEASED, Assignment.lease_expires < now
        )
    ).all()
    count = 0
    for a in stale:
        changed = session.execute(
            update(Assignment).where(Assignment.id == a.id, Assignment.state == LEASED).values(state=EXPIRED)
        ).rowcount
        if changed == 1:
            _release_slot(session, a.item_id)
            count += 1
    session.expire_all()
    return count


def _lease_until(campaign: Campaign) -> Any:
    return utcnow() + timedelta(seconds=campaign.lease_seconds)


def next_assignment(session: Session, campaign: Campaign, annotator: Annotator) -> Assignment | None:
    """The annotator's current item: resumed, or newly claimed; None when their queue is empty."""
    expire_leases(session, campaign)
    current = session.scalars(
        select(Assignment)
        .where(
            Assignment.campaign_id == campaign.id,
            Assignment.annotator_id == annotator.id,
            Assignment.state == LEASED,
        )
        .order_by(Assignment.leased_at.desc(), Assignment.id.desc())
        .limit(1)
    ).first()
    if current is not None:
        current.lease_expires = _lease_until(campaign)
        return current
    mine = exists().where(Assignment.item_id == Item.id, Assignment.annotator_id == annotator.id)
    candidates = session.scalars(
        select(Item)
        .where(
            Item.campaign_id == campaign.id,
            or_(Item.gold.is_not(None), Item.taken < campaign.overlap),
            ~mine,
        )
        .order_by(Item.position)
        .limit(50)
    ).all()
    for item in candidates:
        if not _claim_slot(session, item, campaign):
            continue  # someone else took the last slot a moment ago
        now = utcnow()
        assignment = Assignment(
            item_id=item.id,
            annotator_id=annotator.id,
            campaign_id=campaign.id,
            display_order=display_order(campaign, annotator.id, item),
            state=LEASED,
            attempt=0,
            leased_at=now,
            lease_expires=_lease_until(campaign),
        )
        session.add(assignment)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # the same annotator in two tabs at once; the other tab won
            _release_slot(session, item.id)
            continue
        return assignment
    return None


def _own_assignment(
    session: Session, campaign: Campaign, annotator: Annotator, assignment_id: int
) -> Assignment:
    a = session.get(Assignment, assignment_id)
    # Someone else's assignment answers exactly like a missing one: nothing leaks about other queues.
    if a is None or a.annotator_id != annotator.id or a.campaign_id != campaign.id:
        raise AnnotateError(
            f"no assignment {assignment_id} in your queue for campaign {campaign.name!r}", 404
        )
    return a


@dataclass
class Judgement:
    """A submitted label, in the item's completion indices (not display positions)."""

    ranking: list[int]
    ties: list[list[int]]
    strength: int = 2
    flags: list[str] | None = None
    rationale: str = ""
    seconds: float | None = None


def submit_label(
    session: Session, campaign: Campaign, annotator: Annotator, assignment_id: int, judgement: Judgement
) -> Label:
    """Store a label for one of the annotator's leased items; a second submit is refused with 409."""
    a = _own_assignment(session, campaign, annotator, assignment_id)
    item = session.get(Item, a.item_id)
    assert item is not None
    k = len(item.completions)
    ranking = list(judgement.ranking)
    if isinstance(ranking, list) and len(ranking) == k - 1 and all(type(x) is int for x in ranking):
        ranking += sorted(set(range(k)) - set(ranking))  # the last place is implied
    try:
        ranking, ties = check_ranking(ranking, judgement.ties, k)
    except ValueError as exc:
        raise AnnotateError(f"ranking: {exc}", 422) from None
    flags = sorted(set(judgement.flags or []))
    if any(f not in FLAGS for f in flags):
        raise AnnotateError(f"flags: expected a subset of {', '.join(FLAGS)}", 422)
    if judgement.strength not in (1, 2, 3):
        raise AnnotateError("strength: expected 1 (slightly), 2 (clearly) or 3 (much better)", 422)
    if len(judgement.rationale) > MAX_RATIONALE:
        raise AnnotateError(f"rationale: expected at most {MAX_RATIONALE} characters", 422)
    if a.state not in (LEASED, EXPIRED):
        raise AnnotateError(f"assignment {a.id} is already {a.state}; use undo to change it", 409)
    old_state = a.state
    now = utcnow()
    changed = session.execute(
        update(Assignment)
        .where(Assignment.id == a.id, Assignment.state == old_state, Assignment.attempt == a.attempt)
        .values(state=DONE, finished_at=now)
    ).rowcount
    if changed != 1:
        raise AnnotateError(f"assignment {a.id} was changed by another request; reload", 409)
    if old_state == EXPIRED:  # keep the late work; the slot count follows the truth
        session.execute(update(Item).where(Item.id == item.id).values(taken=Item.taken + 1))
    elapsed = max(0.0, (now - a.leased_at).total_seconds())
    seconds = judgement.seconds
    if seconds is None or not 0 <= seconds <= elapsed + 5:
        seconds = elapsed  # the browser measures active time; fall back to wall time if absent or absurd
    label = Label(
        assignment_id=a.id,
        attempt=a.attempt,
        item_id=item.id,
        annotator_id=annotator.id,
        campaign_id=campaign.id,
        ranking=ranking,
        ties=ties,
        strength=0 if len(ties) == k * (k - 1) // 2 else judgement.strength,  # 0: all judged equal
        flags=flags,
        rationale=judgement.rationale,
        display_order=list(a.display_order),
        seconds=round(float(seconds), 3),
        created_at=now,
    )
    session.add(label)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise AnnotateError(f"assignment {a.id} is already labelled", 409) from None
    session.expire(a)
    return label


def skip(session: Session, campaign: Campaign, annotator: Annotator, assignment_id: int) -> Assignment:
    """Give the item back to the pool; this annotator will not get it again."""
    a = _own_assignment(session, campaign, annotator, assignment_id)
    if a.state not in (LEASED, EXPIRED):
        raise AnnotateError(f"assignment {a.id} is already {a.state}", 409)
    old_state = a.state
    changed = session.execute(
        update(Assignment)
        .where(Assignment.id == a.id, Assignment.state == old_state)
        .values(state=SKIPPED, finished_at=utcnow())
    ).rowcount
    if changed != 1:
        raise AnnotateError(f"assignment {a.id} was changed by another request; reload", 409)
    if old_state == LEASED:
        _release_slot(session, a.item_id)
    session.expire(a)
    return a


def undo_last(session: Session, campaign: Campaign, annotator: Annotator) -> Assignment:
    """Re-open the annotator's most recent label or skip in this campaign (the label is retracted, kept)."""
    a = session.scalars(
        select(Assignment)
        .where(
            Assignment.campaign_id == campaign.id,
            Assignment.annotator_id == annotator.id,
            Assignment.state.in_((DONE, SKIPPED)),
        )
        .order_by(Assignment.finished_at.desc(), Assignment.id.desc())
        .limit(1)
    ).first()
    if a is None:
        raise AnnotateError("nothing to undo", 409)
    item = session.get(Item, a.item_id)
    assert item is not None
    if a.state == SKIPPED and not _claim_slot(session, item, campaign):
        raise AnnotateError("the skipped item has since been given to enough other annotators", 409)
    now = utcnow()
    if a.state == DONE:
        session.execute(
            update(Label)
            .where(Label.assignment_id == a.id, Label.retracted_at.is_(None))
            .values(retracted_at=now)
        )
    changed = session.execute(
        update(Assignment)
        .where(Assignment.id == a.id, Assignment.state == a.state, Assignment.attempt == a.attempt)
        .values(
            state=LEASED,
            attempt=a.attempt + 1,
            leased_at=now,
            lease_expires=_lease_until(campaign),
            finished_at=None,
        )
    ).rowcount
    if changed != 1:
        raise AnnotateError("your last item was changed by another request; reload", 409)
    session.expire(a)
    return a


# ------------------------------------------------------------------------------------------------- progress


def active_labels(session: Session, campaign: Campaign) -> list[Label]:
    return list(
        session.scalars(
            select(Label)
            .where(Label.campaign_id == campaign.id, Label.retracted_at.is_(None))
            .order_by(Label.created_at, Label.id)
        )
    )


def annotator_progress(session: Session, campaign: Campaign, annotator: Annotator) -> dict[str, int]:
    """Done, skipped and (an estimate of) remaining items for one annotator."""
    counts = dict(
        session.execute(
            select(Assignment.state, func.count())
            .where(Assignment.campaign_id == campaign.id, Assignment.annotator_id == annotator.id)
            .group_by(Assignment.state)
        ).all()
    )
    mine = exists().where(Assignment.item_id == Item.id, Assignment.annotator_id == annotator.id)
    open_items = session.scalar(
        select(func.count())
        .select_from(Item)
        .where(
            Item.campaign_id == campaign.id, or_(Item.gold.is_not(None), Item.taken < campaign.overlap), ~mine
        )
    )
    leased = counts.get(LEASED, 0)
    return {
        "done": counts.get(DONE, 0),
        "skipped": counts.get(SKIPPED, 0),
        "remaining": int(open_items or 0) + leased,
    }


def campaign_progress(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Items, gold items, labels needed (items x overlap, plus gold x annotators seen) and labels done."""
    n_items = session.scalar(
        select(func.count()).select_from(Item).where(Item.campaign_id == campaign.id, Item.gold.is_(None))
    )
    n_gold = session.scalar(
        select(func.count()).select_from(Item).where(Item.campaign_id == campaign.id, Item.gold.is_not(None))
    )
    # Labels that count toward overlap: at most `overlap` per regular item.
    per_item = (
        select(Assignment.item_id, func.count().label("n"))
        .join(Item, Item.id == Assignment.item_id)
        .where(and_(Assignment.campaign_id == campaign.id, Assignment.state == DONE, Item.gold.is_(None)))
        .group_by(Assignment.item_id)
        .subquery()
    )
    rows = session.execute(select(per_item.c.n)).scalars().all()
    covered = sum(min(n, campaign.overlap) for n in rows)
    complete = sum(1 for n in rows if n >= campaign.overlap)
    needed = int(n_items or 0) * campaign.overlap
    return {
        "items": int(n_items or 0),
        "gold_items": int(n_gold or 0),
        "labels_needed": needed,
        "labels_done": covered,
        "items_complete": complete,
        "percent": round(100.0 * covered / needed, 1) if needed else 100.0,
    }
