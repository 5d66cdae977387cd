"""Agreement statistics against hand-computed values and Krippendorff's published example."""

from __future__ import annotations

import pytest

from rlhfkit.annotate.agreement import (
    Vote,
    agreement_with_majority,
    gold_accuracy,
    krippendorff_alpha,
    pair_preferences,
    pairwise_agreement,
    position_bias,
    summarize,
    units_from_votes,
)
from rlhfkit.annotate.export import consensus


def test_alpha_nominal_hand_computed() -> None:
    # Units [a,a] [a,b] [b,b]: o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6.
    # D_o = 2/6, D_e = (3*3 + 3*3)/(6*5) = 0.6  ->  alpha = 1 - (1/3)/0.6 = 4/9.
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]], "nominal") == pytest.approx(4 / 9)


def test_alpha_ordinal_hand_computed() -> None:
    # Units [1,0] [1,1] [-1,-1]: n_-1 = 2, n_0 = 1, n_1 = 3, n = 6.
    # delta2(-1,0) = (2+1-1.5)^2 = 2.25, delta2(0,1) = (1+3-2)^2 = 4, delta2(-1,1) = (6-2.5)^2 = 12.25.
    # D_o = 2*4/6 = 4/3; D_e = 2*(2*1*2.25 + 1*3*4 + 2*3*12.25)/30 = 6  ->  alpha = 1 - (4/3)/6 = 7/9.
    assert krippendorff_alpha([[1, 0], [1, 1], [-1, -1]], "ordinal") == pytest.approx(7 / 9)


def test_alpha_matches_krippendorff_2011_reliability_data() -> None:
    # The 4-coder, 12-unit example of Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability":
    # published alpha = 0.743 (nominal), 0.815 (ordinal), 0.849 (interval).
    n = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[v for v in column if v is not None] for column in zip(*coders)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_alpha_undefined_and_perfect() -> None:
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None  # no variation: undefined, not 1.0
    assert krippendorff_alpha([[1], [0]]) is None  # nothing pairable
    assert krippendorff_alpha([[1, 1], [0, 0], [-1, -1]], "ordinal") == pytest.approx(1.0)


def test_pair_preferences_with_ties() -> None:
    # ranking 2 > 0 = 1
    prefs = pair_preferences([2, 0, 1], [[0, 1]])
    assert prefs == {(0, 1): 0, (0, 2): -1, (1, 2): -1}


def _vote(
    item: str, who: str, ranking: list[int], ties: list[list[int]] | None = None, order=None, gold=None
) -> Vote:
    return Vote(item, who, ranking, ties or [], order or [0, 1], seconds=2.0, gold=gold)


def test_hand_made_campaign_numbers() -> None:
    # Item x: a, b, c all prefer response 0 (+1, +1, +1). Item y: a, b prefer 0 (+1), c says tie (0).
    votes = [
        _vote("x", "a", [0, 1]),
        _vote("x", "b", [0, 1]),
        _vote("x", "c", [0, 1]),
        _vote("y", "a", [0, 1]),
        _vote("y", "b", [0, 1]),
        _vote("y", "c", [0, 1], [[0, 1]]),
    ]
    units = units_from_votes(votes)
    values = [list(r.values()) for r in units.values()]
    # Agreeing pairs: x 3/3, y 1/3 -> 4/6.
    assert pairwise_agreement(values) == pytest.approx(4 / 6)
    # o(1,1) = 3 + 1 = 4, o(1,0) = o(0,1) = 1; n_1 = 5, n_0 = 1. Nominal D_o = 2/6, D_e = 2*5/30 -> 0.
    assert krippendorff_alpha(values, "nominal") == pytest.approx(0.0)
    assert krippendorff_alpha(values, "ordinal") == pytest.approx(0.0)
    # Leave-one-out majority: c matches on x, misses on y; a's others on y are split (skipped).
    majority = agreement_with_majority(units)
    assert majority == {"a": 1.0, "b": 1.0, "c": 0.5}
    summary = summarize(votes)
    assert summary["annotators"]["c"]["agreement_with_majority"] == 0.5
    assert summary["median_seconds"] == 2.0


def test_gold_accuracy_and_position_bias() -> None:
    gold = {"ranking": [1, 0], "ties": []}
    votes = [
        _vote("g", "a", [1, 0], gold=gold, order=[1, 0]),  # right; picked the first shown
        _vote("g", "b", [0, 1], gold=gold, order=[1, 0]),  # wrong; picked the second shown
        _vote("h", "a", [0, 1], order=[0, 1]),  # first shown wins
        _vote("h", "b", [0, 1], [[0, 1]], order=[0, 1]),  # tie: excluded from position bias
    ]
    assert gold_accuracy(votes) == {"a": 1.0, "b": 0.0}
    bias = position_bias(votes)
    assert bias == {"first_shown_wins": pytest.approx(2 / 3), "expected": pytest.approx(0.5), "n": 3}


def test_borda_consensus() -> None:
    # Two say 0 > 1 > 2, one says 2 > 1 > 0: scores 0: 4, 1: 3, 2: 2.
    ranking, ties, scores = consensus(3, [([0, 1, 2], []), ([0, 1, 2], []), ([2, 1, 0], [])])
    assert ranking == [0, 1, 2] and ties == [] and scores == [4.0, 3.0, 2.0]
    # One vote each way on a pair: a tie.
    ranking, ties, _ = consensus(2, [([0, 1], []), ([1, 0], [])])
    assert ties == [[0, 1]]
