"""verifier.py: the final answer of a free-text reply, tolerance, and no credit for contradictions."""

from __future__ import annotations

import pytest

from rlhfkit.errors import RlhfkitError
from rlhfkit.verifier import Answer, answer_of, parse_number, verify

TOTAL = Answer(1165.0)
CHEAPEST = Answer("Lomar K3", choices=("Lomar K3", "Molun L3", "Barka K8"), cues=("cheapest",))


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("3 × $349 = $1,047. 2 × $59 = $118. So the answer is $1,165.", "correct"),  # last number
        ("$1,165", "correct"),
        ("1165.00 dollars in all.", "correct"),
        ("The answer is $1,165 (3 × $349 + 2 × $59).", "wrong"),  # an answer sentence states its last number
        ("The answer is $1,165. The answer is $1,200.", "contradictory"),
        ("The total is $1,165. Altogether $1,200.", "contradictory"),
        ("It costs 1165 or 1200.", "contradictory"),
        ("Somewhere between 1100 and 1165.", "contradictory"),
        ("About 1,100-1,165.", "contradictory"),
        ("The Lomar K3 phone costs a lot.", "no_answer"),  # K3 is a name, not a number
        ("", "no_answer"),
        ("It is 1166.", "wrong"),
    ],
)
def test_numbers(reply, reason):
    assert verify(reply, TOTAL).reason == reason


def test_tolerance_and_number_forms():
    assert verify("The answer is 3.14.", Answer(3.14159, tolerance=0.01)).correct
    assert not verify("The answer is 3.1.", Answer(3.14159, tolerance=0.01)).correct
    assert verify("It fell by -5 degrees.", Answer(-5.0)).correct
    assert [parse_number(x) for x in ("$1,165.00", "-3", "1,16", "K3", "12 13")] == [
        1165.0,
        -3.0,
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("The Lomar K3 phone is the cheapest.", "correct"),
        ("Molun L3: $59. Lomar K3: $29. So the Lomar K3 is the cheapest.", "correct"),
        ("The Lomar K3 is cheaper than the Barka K8, but the Molun L3 is the cheapest.", "wrong"),
        ("The Lomar K3 or the Molun L3 is the cheapest.", "contradictory"),
        ("The cheapest is the Lomar K3. The answer is the Molun L3.", "contradictory"),
        ("Barka K8.", "wrong"),
        ("I like phones.", "no_answer"),
    ],
)
def test_choices(reply, reason):
    assert verify(reply, CHEAPEST).reason == reason


def test_listing_every_choice_or_number_earns_nothing():
    """Gaming attempts: naming all options, or stating several answers, is never credited."""
    assert not verify("Lomar K3, Molun L3, Barka K8.", CHEAPEST).correct
    assert not verify("The answer is 1165, 1166 or 1167.", TOTAL).correct
    assert not verify("The answer is 1164. The answer is 1165.", TOTAL).correct


def test_answer_fields_from_meta_or_the_top_level_and_one_line_errors():
    assert answer_of({"meta": {"answer": 6}}) == Answer(6.0)
    assert answer_of({"answer": "$1,165"}) == Answer(1165.0)
    assert answer_of({"meta": {"kind": "capital"}}) is None
    bad = [
        ({"answer": "Paris"}, "field 'answer': expected a number, or a string listed in choices"),
        (
            {"meta": {"answer": "X", "choices": ["A", "B"]}},
            "field 'meta.answer': 'X' is not one of the choices",
        ),
        ({"meta": {"answer": 1, "tolerance": -1}}, "field 'meta.tolerance': expected a number >= 0"),
        (
            {"meta": {"answer": 1, "choices": "A"}},
            "field 'meta.choices': expected a list of non-empty strings",
        ),
        ({"answer": True}, "field 'answer': expected a number"),
    ]
    for record, message in bad:
        with pytest.raises(RlhfkitError, match="^p.jsonl:7: " + message.replace("(", r"\(")):
            answer_of(record, "p.jsonl", 7)
