"""Dashboard numbers for one campaign: progress from the database, agreement from agreement.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.annotate.agreement import Vote, summarize
from rlhfkit.annotate.campaigns import active_labels, campaign_progress
from rlhfkit.annotate.store import Annotator, Assignment, Campaign, Item


def campaign_votes(session: Session, campaign: Campaign) -> list[Vote]:
    names = dict(session.execute(select(Annotator.id, Annotator.name)).all())
    gold = dict(session.execute(select(Item.id, Item.gold).where(Item.campaign_id == campaign.id)).all())
    return [
        Vote(
            item=label.item_id,
            annotator=names[label.annotator_id],
            ranking=label.ranking,
            ties=label.ties,
            display_order=label.display_order,
            seconds=label.seconds,
            gold=gold.get(label.item_id),
        )
        for label in active_labels(session, campaign)
    ]


def campaign_stats(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Progress, agreement, gold accuracy, timing and position bias, overall and per annotator."""
    summary = summarize(campaign_votes(session, campaign))
    states = session.execute(
        select(Annotator.name, Assignment.state, func.count())
        .join(Annotator, Annotator.id == Assignment.annotator_id)
        .where(Assignment.campaign_id == campaign.id)
        .group_by(Annotator.name, Assignment.state)
    ).all()
    per_annotator: dict[str, dict[str, Any]] = {}
    for name, state, count in states:
        per_annotator.setdefault(name, {"done": 0, "skipped": 0, "leased": 0, "expired": 0})[state] = count
    for name, numbers in summary["annotators"].items():
        per_annotator.setdefault(name, {"done": 0, "skipped": 0, "leased": 0, "expired": 0}).update(numbers)
    summary["annotators"] = dict(sorted(per_annotator.items()))
    return {
        "campaign": campaign.name,
        "mode": campaign.mode,
        "overlap": campaign.overlap,
        "progress": campaign_progress(session, campaign),
        **summary,
    }
