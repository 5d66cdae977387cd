"""Persona styles: rewrite a neutral response as a formal advisor, a casual friend, a terse expert or a
teacher for a young child, with a chosen level of adherence (human demonstrations follow personas unevenly).
"""

from __future__ import annotations

import random
import re

CONTRACTIONS = {
    "It is": "It's",
    "it is": "it's",
    "is not": "isn't",
    "do not": "don't",
    "I am": "I'm",
    "cannot": "can't",
    "I would": "I'd",
    "That is": "That's",
    "There is": "There's",
    "you will": "you'll",
    "I will": "I'll",
    "does not": "doesn't",
    "has not": "hasn't",
}
EXPANSIONS = {
    "can't": "cannot",
    "won't": "will not",
    "I'm": "I am",
    "don't": "do not",
    "it's": "it is",
    "It's": "It is",
    "isn't": "is not",
    "I'd": "I would",
    "that's": "that is",
    "That's": "That is",
    "doesn't": "does not",
    "hasn't": "has not",
    "I'll": "I will",
    "you'll": "you will",
}
CHILD_NOTES = {
    "capital": "A capital is the city where the leaders of a country work.",
    "continent": "A continent is a very big piece of land with many countries.",
    "planet_order": "The planets go around the Sun like kids running around a tree.",
    "animal_diet": "That is what gives it energy to run and play.",
    "animal_class": "Animals in the same group are a bit like one big family.",
    "unit": "You can count them one by one if you like!",
    "scientist_known": "Scientists ask questions and test ideas to learn how the world works.",
}


def _swap(text: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def formal(text: str, rng: random.Random) -> str:
    text = _swap(text, EXPANSIONS).replace("Sure! ", "").replace("Good question. ", "")
    opener = rng.choice(("Certainly. ", "Thank you for your question. ", "Of course. "))
    closer = rng.choice(
        ("", " I hope this information is helpful.", " Please let me know if I may assist further.")
    )
    return opener + text.replace("!", ".") + closer


def casual(text: str, rng: random.Random) -> str:
    text = _swap(text, CONTRACTIONS)
    opener = rng.choice(("Oh, easy one! ", "Hey! ", "Ha, good question! ", "Sure thing! "))
    closer = rng.choice((" Hope that helps!", " Pretty cool, right?", " Have fun!", ""))
    return opener + text + closer


def terse(core: str, rng: random.Random) -> str:
    return core


def child(text: str, kind: str, rng: random.Random) -> str:
    opener = rng.choice(("Great question! ", "Here is a fun fact! ", "Let me tell you! "))
    note = CHILD_NOTES.get(kind, "")
    text = text.replace(", but ", ". But ").replace(", so ", ". So ")
    return (opener + text + (" " + note if note else "")).strip()


def styled(text: str, core: str, persona: str, kind: str, rng: random.Random, adherence: str = "full") -> str:
    """Apply a persona. ``adherence``: full | none (neutral text) | partial (a light touch) | wrong (the opposite)."""
    if adherence == "none":
        return text
    if adherence == "wrong":
        opposite = {"formal": "casual", "casual": "formal", "terse": "verbose", "child": "formal"}[persona]
        if opposite == "verbose":
            return (
                formal(text, rng) + " There are several further considerations that may be relevant to you."
            )
        return styled(text, core, opposite, kind, rng)
    if adherence == "partial":
        if persona == "terse":
            return text
        if persona == "formal":
            return "Certainly. " + text
        if persona == "casual":
            return "Hey! " + text
        return "Great question! " + text
    if persona == "formal":
        return formal(text, rng)
    if persona == "casual":
        return casual(text, rng)
    if persona == "terse":
        return terse(core, rng)
    return child(text, kind, rng)
