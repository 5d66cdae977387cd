"""Tiny English helpers shared by the generators: articles, verb agreement, capitalization."""

from __future__ import annotations

PLURAL_PRODUCTS = ("headphones", "running shoes")


def article(word: str) -> str:
    """'elephant' -> 'an elephant'."""
    vowel = word[:1].lower() in "aeiou" or word.lower().startswith(("hour", "honest"))
    return ("an " if vowel else "a ") + word


def cap(text: str) -> str:
    """Capitalize the first letter only (keeps proper nouns inside intact)."""
    return text[:1].upper() + text[1:]


def agree(phrase: str, plural: bool) -> str:
    """Make a plural verb phrase ('have great bass') agree with a singular subject ('has great bass')."""
    if plural:
        return phrase
    words = phrase.split(" ", 1)
    if words[0] == "only" and len(words) > 1:
        return "only " + agree(words[1], False)
    verb, rest = words[0], (" " + words[1] if len(words) > 1 else "")
    if verb == "have":
        verb = "has"
    elif verb == "are":
        verb = "is"
    elif verb.endswith(("ch", "sh", "ss", "x")):
        verb += "es"
    elif verb.endswith("y") and verb[-2:-1] not in "aeiou":
        verb = verb[:-1] + "ies"
    else:
        verb += "s"
    return verb + rest


def is_plural_product(product: dict) -> bool:
    return product["category"] in PLURAL_PRODUCTS


def pronoun(product: dict) -> str:
    return "they" if is_plural_product(product) else "it"


THE_NAMES = (
    "United Kingdom",
    "United States",
    "Czech Republic",
    "Philippines",
    "Netherlands",
    "Democratic Republic of the Congo",
    "Dominican Republic",
    "United Arab Emirates",
    "Soviet Union",
)


def the_name(country: str) -> str:
    """'United Kingdom' -> 'the United Kingdom'; other names unchanged."""
    return "the " + country if country in THE_NAMES else country
