"""Inter-annotator agreement, quality against gold, and position bias: pure functions over votes.

Every label (a ranking of K responses with ties) is broken into pairwise judgements: for responses
i < j of an item the value is +1 (i better), -1 (j better) or 0 (tie). One *unit* is one (item, i, j);
its values are the judgements of the annotators who labelled that item. Pairs are what reward models are
trained on, so agreement on pairs is the number that predicts label noise in the reward model.

* **Pairwise agreement**: over all units, the fraction of pairs of judgements (two annotators, same unit)
  that are equal. Easy to read, but inflated by chance.
* **Krippendorff's alpha** = 1 - D_o / D_e, chance-corrected, handles any number of raters per unit and
  missing ratings. Built from the coincidence matrix

      o_ck = sum over units u with m_u >= 2 of (number of ordered rater pairs in u with values c, k) / (m_u - 1)
      n_c  = sum_k o_ck,   n = sum_c n_c
      D_o  = sum_{c,k} o_ck * delta2(c, k) / n
      D_e  = sum_{c,k} n_c * n_k * delta2(c, k) / (n * (n - 1))

  with delta2 = 0/1 for nominal data, (c - k)^2 for interval data and, for ordinal data,
  (sum of n_g for g from c to k  -  (n_c + n_k) / 2)^2. Preference values -1 < 0 < +1 are ordered (a tie
  lies between the two preferences), so **ordinal** is the main figure; nominal is reported alongside.
* **Agreement with the majority**: for each annotator, the fraction of their judgements equal to the most
  common judgement of the *other* annotators on the same unit (leave-one-out, so one's own vote cannot
  inflate the score; units whose others are split evenly are skipped).
* **Gold accuracy**: the fraction of their pairwise judgements on honeypot items that match the known answer.
* **Position bias**: how often the response shown first was ranked (alone) first, against the 1/K
  expected from an unbiased annotator. Ties at the top are left out.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

Unit = tuple[Hashable, int, int]


@dataclass
class Vote:
    """One annotator's label on one item (indices are the item's completion indices)."""

    item: Hashable
    annotator: str
    ranking: list[int]
    ties: list[list[int]]
    display_order: list[int]
    seconds: float = 0.0
    gold: dict[str, Any] | None = None  # the item's known answer, for honeypots


def pair_preferences(ranking: Sequence[int], ties: Sequence[Sequence[int]]) -> dict[tuple[int, int], int]:
    """{(i, j): +1 if i is better, -1 if j is better, 0 if tied} for every pair i < j."""
    position = {c: p for p, c in enumerate(ranking)}
    tied = {(min(a, b), max(a, b)) for a, b in ties}
    out = {}
    for i, j in combinations(sorted(position), 2):
        out[(i, j)] = 0 if (i, j) in tied else (1 if position[i] < position[j] else -1)
    return out


def units_from_votes(votes: Sequence[Vote]) -> dict[Unit, dict[str, int]]:
    """{(item, i, j): {annotator: value}}."""
    units: dict[Unit, dict[str, int]] = defaultdict(dict)
    for vote in votes:
        for (i, j), value in pair_preferences(vote.ranking, vote.ties).items():
            units[(vote.item, i, j)][vote.annotator] = value
    return dict(units)


def _delta2(metric: str, values: list[Any], totals: dict[Any, float]) -> dict[tuple[Any, Any], float]:
    out = {}
    for c in values:
        for k in values:
            if metric == "nominal":
                d = 0.0 if c == k else 1.0
            elif metric == "interval":
                d = float(c - k) ** 2
            elif metric == "ordinal":
                lo, hi = sorted((values.index(c), values.index(k)))
                between = sum(totals[values[g]] for g in range(lo, hi + 1))
                d = (between - (totals[c] + totals[k]) / 2.0) ** 2
            else:
                raise ValueError(f"metric: expected nominal, ordinal or interval, got {metric!r}")
            out[(c, k)] = d
    return out


def krippendorff_alpha(units: Sequence[Sequence[Any]], metric: str = "nominal") -> float | None:
    """Krippendorff's alpha for ``units`` (each a list of the values given to one unit; missing omitted).

    Returns None when it is undefined (fewer than two pairable values, or no variation at all).
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    coincidence: dict[tuple[Any, Any], float] = defaultdict(float)
    for unit in pairable:
        m = len(unit)
        for a in range(m):
            for b in range(m):
                if a != b:
                    coincidence[(unit[a], unit[b])] += 1.0 / (m - 1)
    values = sorted({v for unit in pairable for v in unit})
    totals = {c: sum(coincidence[(c, k)] for k in values) for c in values}
    n = sum(totals.values())
    if n < 2 or len(values) < 2:
        return None
    delta2 = _delta2(metric, values, totals)
    observed = sum(coincidence[(c, k)] * delta2[(c, k)] for c in values for k in values) / n
    expected = sum(totals[c] * totals[k] * delta2[(c, k)] for c in values for k in values) / (n * (n - 1))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def pairwise_agreement(units: Sequence[Sequence[Any]]) -> float | None:
    """Fraction of pairs of judgements on the same unit that are equal (None if no unit has two)."""
    agree = total = 0
    for unit in units:
        for a, b in combinations(unit, 2):
            total += 1
            agree += a == b
    return agree / total if total else None


def agreement_with_majority(units: dict[Unit, dict[str, int]]) -> dict[str, float | None]:
    """Per annotator: fraction of judgements equal to the leave-one-out majority of the others."""
    hits: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    for ratings in units.values():
        for annotator, value in ratings.items():
            others = Counter(v for who, v in ratings.items() if who != annotator)
            if not others:
                continue
            top = others.most_common()
            if len(top) > 1 and top[0][1] == top[1][1]:
                continue  # the others are split: no majority to compare with
            counted[annotator] += 1
            hits[annotator] += value == top[0][0]
    names = {a for ratings in units.values() for a in ratings}
    return {a: (hits[a] / counted[a] if counted[a] else None) for a in sorted(names)}


def gold_accuracy(votes: Sequence[Vote]) -> dict[str, float | None]:
    """Per annotator: fraction of pairwise judgements on gold items that match the gold answer."""
    hits: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    for vote in votes:
        if vote.gold is None:
            continue
        truth = pair_preferences(vote.gold["ranking"], vote.gold.get("ties", []))
        for pair, value in pair_preferences(vote.ranking, vote.ties).items():
            counted[vote.annotator] += 1
            hits[vote.annotator] += value == truth[pair]
    names = {v.annotator for v in votes}
    return {a: (hits[a] / counted[a] if counted[a] else None) for a in sorted(names)}


def position_bias(votes: Sequence[Vote]) -> dict[str, float | int | None]:
    """How often the first-shown response is ranked first (alone), and the rate expected by chance."""
    wins = n = 0
    expected = 0.0
    for vote in votes:
        top = vote.ranking[0]
        if any(top in pair for pair in vote.ties):
            continue
        n += 1
        wins += vote.display_order[0] == top
        expected += 1.0 / len(vote.ranking)
    return {"first_shown_wins": wins / n if n else None, "expected": expected / n if n else None, "n": n}


def summarize(votes: Sequence[Vote]) -> dict[str, Any]:
    """All the dashboard numbers for a list of votes: overall and per annotator."""
    units = units_from_votes(votes)
    values = [list(r.values()) for r in units.values()]
    majority = agreement_with_majority(units)
    gold = gold_accuracy(votes)
    by_annotator: dict[str, list[Vote]] = defaultdict(list)
    for vote in votes:
        by_annotator[vote.annotator].append(vote)
    per_annotator = {
        name: {
            "labels": len(vs),
            "median_seconds": statistics.median(v.seconds for v in vs),
            "agreement_with_majority": majority.get(name),
            "gold_accuracy": gold.get(name),
            "position_bias": position_bias(vs),
        }
        for name, vs in sorted(by_annotator.items())
    }
    return {
        "labels": len(votes),
        "units_with_overlap": sum(1 for u in values if len(u) >= 2),
        "pairwise_agreement": pairwise_agreement(values),
        "alpha_ordinal": krippendorff_alpha(values, "ordinal"),
        "alpha_nominal": krippendorff_alpha(values, "nominal"),
        "median_seconds": statistics.median(v.seconds for v in votes) if votes else None,
        "position_bias": position_bias(votes),
        "annotators": per_annotator,
    }
