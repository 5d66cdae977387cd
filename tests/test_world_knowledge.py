"""Knowledge base and tasks: spot-checked facts, held-out templates and entities."""

from __future__ import annotations

import random

from rlhfkit.world.knowledge import is_eval_entity, load_knowledge
from rlhfkit.world.tasks import HOLDOUT_MIN_POOL, KINDS, sample_task


def test_spot_checked_real_facts():
    kb = load_knowledge()
    assert kb.find("countries", "Australia")["capital"] == "Canberra"
    assert kb.find("countries", "Canada")["capital"] == "Ottawa"
    assert kb.find("planets", "Mars")["largest_moon"] == "Phobos"
    summer = {s["year"]: s["city"] for s in kb.pools["summer"]}
    assert summer["2016"] == "Rio de Janeiro" and summer["1896"] == "Athens" and summer["2024"] == "Paris"
    cups = {w["year"]: (w["country"], w["winner"]) for w in kb.pools["worldcup"]}
    assert cups["1966"] == ("England", "England") and cups["2022"] == ("Qatar", "Argentina")
    assert kb.find("scientists", "Marie Curie")["born"] == "1867"


def test_hundreds_of_entities_and_a_fixed_catalogue():
    kb = load_knowledge()
    entities = sum(
        len(kb.pools[p])
        for p in (
            "countries",
            "planets",
            "scientists",
            "summer",
            "winter",
            "worldcup",
            "animals",
            "units",
            "howtos",
            "products",
            "people",
            "towns",
        )
    )
    assert entities > 500
    load_knowledge.cache_clear()
    assert load_knowledge().pools["products"] == kb.pools["products"]  # same catalogue every time


def test_eval_templates_and_entities_are_held_out():
    kb = load_knowledge()
    rng = random.Random(0)
    for name, kind in KINDS.items():
        assert not set(kind.train) & set(kind.eval) or name == "bare_topic"
        if kind.pool and len(kb.pools[kind.pool]) >= HOLDOUT_MIN_POOL:
            for _ in range(20):
                assert not is_eval_entity(kind.pool, sample_task(name, rng, "train").entity["name"])
                assert is_eval_entity(kind.pool, sample_task(name, rng, "eval").entity["name"])


def test_future_questions_are_really_in_the_future():
    rng = random.Random(0)
    for _ in range(50):
        assert int(sample_task("future_wc_winner", rng).slots["year"]) >= 2030
        assert int(sample_task("future_olympics_host", rng).slots["year"]) >= 2040
