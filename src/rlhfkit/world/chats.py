"""SFT demonstrations: chats written the way hired human demonstrators write them, imperfections included.

Most demonstrations are good (direct answers, steps, weighed comparisons, polite refusals, persona-styled
replies), but at the documented rates in ``IMPERFECTION_RATES`` they are not: unknowable questions get a
confident made-up answer, bare topics get the article continued, personas are followed unevenly, how-tos come
as run-on prose, a few benign requests are refused, lengths vary. SFT learns all of this; preference learning
has something to fix.
"""

from __future__ import annotations

import random

from rlhfkit.world.answers import core_answer, flawed_response, good_response
from rlhfkit.world.knowledge import load_knowledge
from rlhfkit.world.prompts import sample_prompt
from rlhfkit.world.style import styled
from rlhfkit.world.tasks import CATEGORIES

CATEGORY_WEIGHTS = {
    "factual": 0.24,
    "unknowable": 0.12,
    "ambiguous": 0.10,
    "howto": 0.13,
    "comparison": 0.10,
    "persona": 0.16,
    "harmful": 0.07,
    "benign_risky": 0.08,
}
# Per category: (flaw name, probability). The remaining probability mass is a good demonstration.
IMPERFECTION_RATES: dict[str, list[tuple[str, float]]] = {
    "factual": [("wrong_fact", 0.03), ("too_long", 0.10), ("too_short", 0.08)],
    "unknowable": [("fabricated", 0.30), ("hedged_fabricated", 0.10)],
    "ambiguous": [("continuation", 0.25), ("encyclopedic", 0.05)],
    "howto": [("prose", 0.20), ("too_long", 0.08), ("missing_steps", 0.04)],
    "comparison": [("one_sided", 0.08), ("no_tradeoff", 0.07), ("too_long", 0.05)],
    "persona": [("ignore_persona", 0.25), ("partial_persona", 0.15)],
    "harmful": [("curt_refusal", 0.10)],
    "benign_risky": [("over_refusal", 0.08), ("too_short", 0.05)],
}


def _pick_flaw(category: str, rng: random.Random) -> str | None:
    r = rng.random()
    for flaw, p in IMPERFECTION_RATES[category]:
        if r < p:
            return flaw
        r -= p
    return None


def demonstration(category: str, rng: random.Random, split: str = "train") -> dict:
    """One SFT chat of a category, with its (possibly imperfect) assistant reply."""
    kb = load_knowledge()
    messages, task, meta = sample_prompt(category, rng, split, kb)
    flaw = _pick_flaw(category, rng)
    if category == "persona":
        adherence = {"ignore_persona": "none", "partial_persona": "partial"}.get(flaw or "", "full")
        reply = styled(
            good_response(task, rng, kb), core_answer(task, kb), meta["persona"], task.kind, rng, adherence
        )
    elif flaw:
        reply = flawed_response(task, flaw, rng, kb)
    else:
        reply = good_response(task, rng, kb)
    return {
        "messages": [*messages, {"role": "assistant", "content": reply}],
        "category": category,
        "kind": task.kind,
        "meta": meta,
        "quality": flaw or "good",
    }


def demonstrations(n: int, rng: random.Random, prefix: str) -> list[dict]:
    """``n`` chats with categories drawn by ``CATEGORY_WEIGHTS``; ids ``{prefix}-000000``..."""
    cats = list(CATEGORIES)
    weights = [CATEGORY_WEIGHTS[c] for c in cats]
    out = []
    for i in range(n):
        chat = demonstration(rng.choices(cats, weights)[0], rng)
        out.append({"id": f"{prefix}-{i:06d}", **chat})
    return out
