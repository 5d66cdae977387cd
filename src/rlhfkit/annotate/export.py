"""Export a campaign's labels in the shared comparisons format, ready for ``rlhfkit reward train``.

Rank campaigns give K-way ranking records, pairwise campaigns give TRL preference records
(``prompt`` / ``chosen`` / ``rejected``). Retracted (undone) labels and skips are left out; ties and flags
are kept; each record carries ``annotator``, ``seconds``, ``created_at`` and, in ``meta``, the display
order the annotator saw, the strength of preference and the rationale.

``votes="all"`` writes one record per label. ``votes="majority"`` writes one record per item, aggregated
by Borda count: a response scores one point per response ranked below it and half a point per response
tied with it, summed over votes; the consensus ranking sorts by score and equal scores are ties. For two
responses this is the plain majority vote, and ``label`` (pairwise) is the soft probability that
``chosen`` is better: its share of the votes, ties counting half. Flags are the union over votes (a single
"harmful" is worth keeping), with counts in ``meta.flag_counts``. ``margin`` (pairwise) is the strength of
preference on Llama 2's scale (slightly 1/3, clearly 2/3, much better 1; the mean over votes for the
majority, never below 0); ties have margin 0 and label 0.5, as ``rlhfkit reward train`` expects.

Gold (honeypot) items are left out unless ``include_gold=True``: they measure annotators, and their
answers came from the campaign author, not from the crowd.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhfkit.annotate.campaigns import AnnotateError, active_labels
from rlhfkit.annotate.store import Annotator, Campaign, Item, Label, iso
from rlhfkit.data.jsonl import jsonl_line

VOTES = ("majority", "all")


def margin_for(strength: int) -> float:
    """Strength of preference as a Bradley-Terry margin, Llama-2 style: slightly 1/3, clearly 2/3, much 1."""
    return round(strength / 3.0, 4)


def borda_scores(k: int, votes: list[tuple[list[int], list[list[int]]]]) -> list[float]:
    """Sum over votes of (responses ranked below) + 0.5 * (responses tied with), for each response."""
    scores = [0.0] * k
    for ranking, ties in votes:
        tied = {(min(a, b), max(a, b)) for a, b in ties}
        position = {c: p for p, c in enumerate(ranking)}
        for c in range(k):
            for other in range(k):
                if other == c:
                    continue
                if (min(c, other), max(c, other)) in tied:
                    scores[c] += 0.5
                elif position[c] < position[other]:
                    scores[c] += 1.0
    return scores


def consensus(
    k: int, votes: list[tuple[list[int], list[list[int]]]]
) -> tuple[list[int], list[list[int]], list[float]]:
    scores = borda_scores(k, votes)
    ranking = sorted(range(k), key=lambda c: (-scores[c], c))
    ties = [[a, b] for a in range(k) for b in range(a + 1, k) if abs(scores[a] - scores[b]) < 1e-9]
    return ranking, ties, scores


def _vote_meta(label: Label, name: str) -> dict[str, Any]:
    return {
        "annotator": name,
        "ranking": label.ranking,
        "ties": label.ties,
        "display_order": label.display_order,
        "strength": label.strength,
        "flags": label.flags,
        "rationale": label.rationale,
        "seconds": label.seconds,
        "created_at": iso(label.created_at),
        "label_id": label.id,
    }


def _base(item: Item, campaign: Campaign) -> dict[str, Any]:
    meta = {
        **item.meta,
        "campaign": campaign.name,
        "source_id": item.source_id,
        "item_position": item.position,
    }
    if item.gold is not None:
        meta["gold"] = item.gold
    return {"prompt": item.prompt, "id": item.key, "category": item.category, "meta": meta}


def _pair_fields(item: Item, ranking: list[int], ties: list[list[int]]) -> dict[str, Any]:
    best, worst = ranking[0], ranking[1]
    return {
        "chosen": item.completions[best],
        "rejected": item.completions[worst],
        "tie": bool(ties),
    }


def _one_vote(item: Item, campaign: Campaign, label: Label, name: str) -> dict[str, Any]:
    record = _base(item, campaign)
    vote = _vote_meta(label, name)
    record["meta"].update({k: vote[k] for k in ("display_order", "strength", "rationale", "label_id")})
    if campaign.mode == "pairwise":
        record.update(_pair_fields(item, label.ranking, label.ties))
        record["margin"] = margin_for(label.strength) if not label.ties else 0.0
        if label.ties:
            record["label"] = 0.5
    else:
        record.update({"completions": item.completions, "ranking": label.ranking, "ties": label.ties})
    record.update({"annotator": name, "seconds": label.seconds, "created_at": iso(label.created_at)})
    record["flags"] = list(label.flags)
    return record


def _majority(item: Item, campaign: Campaign, labels: list[Label], names: dict[int, str]) -> dict[str, Any]:
    k = len(item.completions)
    ranking, ties, scores = consensus(k, [(lb.ranking, lb.ties) for lb in labels])
    record = _base(item, campaign)
    flag_counts = Counter(f for lb in labels for f in lb.flags)
    record["meta"].update(
        {
            "votes": [_vote_meta(lb, names[lb.annotator_id]) for lb in labels],
            "annotators": [names[lb.annotator_id] for lb in labels],
            "borda_scores": scores,
            "flag_counts": dict(flag_counts),
        }
    )
    if campaign.mode == "pairwise":
        record.update(_pair_fields(item, ranking, ties))
        chosen = ranking[0]
        record["label"] = scores[chosen] / len(labels)
        signed = [
            0.0 if lb.ties else (1 if lb.ranking[0] == chosen else -1) * margin_for(lb.strength)
            for lb in labels
        ]
        record["margin"] = 0.0 if ties else round(max(0.0, sum(signed) / len(signed)), 4)
    else:
        record.update({"completions": item.completions, "ranking": ranking, "ties": ties})
    record.update(
        {
            "annotator": "majority",
            "seconds": statistics.median(lb.seconds for lb in labels),
            "created_at": iso(max(lb.created_at for lb in labels)),
            "flags": sorted(flag_counts),
        }
    )
    return record


def export_records(
    session: Session, campaign: Campaign, votes: str = "majority", include_gold: bool = False
) -> list[dict[str, Any]]:
    """The campaign's comparisons records, in item order."""
    if votes not in VOTES:
        raise AnnotateError(f"votes: expected one of {', '.join(VOTES)}, got {votes!r}", 422)
    names = dict(session.execute(select(Annotator.id, Annotator.name)).all())
    items = {it.id: it for it in session.scalars(select(Item).where(Item.campaign_id == campaign.id))}
    by_item: dict[int, list[Label]] = defaultdict(list)
    for label in active_labels(session, campaign):
        by_item[label.item_id].append(label)
    records = []
    for item_id in sorted(by_item, key=lambda i: items[i].position):
        item = items[item_id]
        if item.gold is not None and not include_gold:
            continue
        labels = by_item[item_id]
        if votes == "all":
            records.extend(_one_vote(item, campaign, lb, names[lb.annotator_id]) for lb in labels)
        else:
            records.append(_majority(item, campaign, labels, names))
    return records


def to_jsonl(records: list[dict[str, Any]]) -> str:
    """The export as JSONL text (the download); `rlhfkit annotate export` writes it with data.jsonl.write_jsonl."""
    return "".join(jsonl_line(r) for r in records)
