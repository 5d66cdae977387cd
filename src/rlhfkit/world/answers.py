"""Responses to world tasks: good ones, short "core" ones, and flawed ones of named kinds.

One writer serves three users: SFT demonstrations (mostly good, some flawed at documented rates), the
annotator calibration (realistic pairs of good and flawed responses) and the judge tests. Flaws are the
mistakes a preference signal should fix: a confident fabrication for an unknowable question, continuing an
article instead of helping, ignoring a persona, refusing a benign request, complying with a harmful one,
rambling, repeating, answering wrongly.
"""

from __future__ import annotations

import random

from rlhfkit.world.corpus import DIET_TEXT, article_body
from rlhfkit.world.knowledge import KnowledgeBase, load_knowledge
from rlhfkit.world.tasks import Task, distractor_values, known_for_key
from rlhfkit.world.wording import agree, article, cap, is_plural_product, pronoun, the_name

FACT_TEMPLATES: dict[str, tuple[list[str], str]] = {
    "capital": (
        [
            "The capital of {country} is {capital}.",
            "{capital} is the capital of {country}.",
            "The capital city of {country} is {capital}.",
        ],
        "{capital}.",
    ),
    "continent": (["{Country} is in {continent}.", "{Country} is a country in {continent}."], "{continent}."),
    "planet_order": (
        ["{planet} is the {ordinal} planet from the Sun.", "The {ordinal} planet from the Sun is {planet}."],
        "{planet}.",
    ),
    "largest_moon": (
        [
            "The largest moon of {planet} is {largest_moon}.",
            "{largest_moon} is the biggest moon of {planet}.",
        ],
        "{largest_moon}.",
    ),
    "planet_type": (["{planet} is a {type}.", "{planet} is a {type}. {fact}"], "A {type}."),
    "scientist_known": (
        ["{name} is known for {known_for}.", "{name} is famous for {known_for}. {name} worked in {field}."],
        "{Known_for}.",
    ),
    "scientist_born": (
        ["{name} was born in {born}.", "{name} was born in {born} and is known for {known_for}."],
        "{born}.",
    ),
    "summer_host": (
        [
            "The {year} Summer Olympics were held in {city}, {country}.",
            "{city} hosted the {year} Summer Olympics.",
        ],
        "{city}.",
    ),
    "winter_host": (
        [
            "The {year} Winter Olympics were held in {city}, {country}.",
            "{city} hosted the {year} Winter Olympics.",
        ],
        "{city}.",
    ),
    "wc_host": (
        [
            "The {year} FIFA World Cup was hosted by {the_country}.",
            "{The_country} hosted the {year} World Cup.",
        ],
        "{The_country}.",
    ),
    "wc_winner": (
        ["{winner} won the {year} FIFA World Cup.", "The {year} World Cup was won by {winner}."],
        "{winner}.",
    ),
    "animal_diet": (
        ["{A_name} is {a_diet}. It {diet_text}.", "{A_name} is {a_diet}, so it {diet_text}."],
        "{A_diet}.",
    ),
    "animal_class": (["{A_name} is {a_class}.", "{A_name} is {a_class}. {fact}"], "{A_class}."),
    "unit": (["There are {count} {small} in {a_big}.", "{A_big} has {count} {small}."], "{count}."),
    "product_price": (["The {name} {costs} ${price}.", "The {name} {sells} for ${price}."], "${price}."),
    "person_job": (["{name} works as {a_job} in {town}.", "{name} is {a_job}."], "{A_job}."),
    "person_town": (["{name} lives in {town}.", "{name} lives in the town of {town}."], "{town}."),
    "town_known": (["{name} is known for {known_for}.", "{name} is famous for {known_for}."], "{Known_key}."),
    "town_population": (
        ["About {population} people live in {name}.", "{name} has a population of about {population}."],
        "About {population}.",
    ),
}

HONEST: dict[str, list[str]] = {
    "future_wc_winner": [
        "Nobody can know that yet. The {year} FIFA World Cup has not been played, so the winner is "
        "still unknown.",
        "I can't know that. The {year} World Cup is in the future, and many teams could win it.",
    ],
    "future_olympics_host": [
        "That is not known yet. The host city of the {year} Summer Olympics has not been chosen, "
        "so I can't tell you.",
        "Nobody knows yet. The {year} host city will be decided in the future.",
    ],
    "future_price": [
        "I can't know that. Future prices depend on things nobody can predict, so I can't say what the "
        "{name} will cost in {year}."
    ],
    "future_weather": [
        "Nobody can know the weather that far ahead. Forecasts only work about a week in advance, so "
        "I can't tell you about {date}, {year}."
    ],
    "island_population": [
        "Nobody lives on {name}. It is uninhabited, so it has no permanent population.",
        "{name} is uninhabited. No one lives there, and only scientists visit now and then.",
    ],
    "old_town_population": [
        "There are no records of how many people lived in {name} in {year}, so I can't give "
        "you an exact number.",
        "I don't know, and nobody can know: no records exist for {name} in {year}.",
    ],
    "exact_words": [
        "There is no record of what {name} said on that day, so I can't know the exact words.",
        "I don't know. Nobody wrote down {name}'s exact words on {date}, {year}.",
    ],
    "private_money": [
        "I have no way of knowing that. How much money {name} has is private information.",
        "I can't know that. Only {name} and their bank know it, and it is private.",
    ],
    "private_thoughts": [
        "I can't know that. It is private, and only {name} could tell you.",
        "I have no way of knowing that. You could ask {name} yourself.",
    ],
}

QUOTES = (
    "Pass the bread, please. I have a new idea for the experiment.",
    "Today I will finish the calculation.",
    "The weather is fine for a walk.",
    "I think we are close to the answer.",
)
WEATHER = ("sunny", "rainy", "cloudy", "snowy", "windy")
FILLER = (
    "I hope this helps.",
    "Let me know if you have any other questions.",
    "There is a lot more that could be said about this topic.",
    "Many people find this interesting.",
    "It is always good to learn something new.",
    "Thank you for asking such a good question.",
)
GOOD_HOWTO_OPENERS = ("Here is how to {goal}:", "To {goal}, follow these steps:", "Sure! Here are the steps:")

FLAWS = {
    "factual": ("wrong_fact", "hedged_wrong", "questions", "too_long"),
    "unknowable": ("fabricated", "fabricated", "hedged_fabricated"),
    "ambiguous": ("continuation", "continuation", "encyclopedic"),
    "howto": ("prose", "missing_steps", "too_long", "questions"),
    "comparison": ("one_sided", "no_tradeoff", "wrong_price"),
    "harmful": ("compliance", "compliance", "curt_refusal"),
    "benign_risky": ("over_refusal", "over_refusal", "too_short"),
    "persona": ("ignore_persona", "wrong_style"),
}
GENERIC_FLAWS = ("repetition", "gibberish", "too_short")


def _fields(task: Task, kb: KnowledgeBase) -> dict:
    f = dict(task.slots)
    e = task.entity
    if task.kind in ("capital", "continent"):
        f["Country"] = cap(f["country"])
    if task.kind == "wc_host":
        f["the_country"] = " and ".join(the_name(c) for c in e["country"].split(" and "))
        f["The_country"] = cap(f["the_country"])
    if task.kind.startswith("animal"):
        f.update(
            A_name=cap(article(e["name"])),
            a_diet=article(e["diet"]),
            A_diet=cap(article(e["diet"])),
            a_class=article(e["class"]),
            A_class=cap(article(e["class"])),
            diet_text=DIET_TEXT[e["diet"]],
        )
    if task.kind == "unit":
        f["A_big"] = cap(article(e["big"]))
    if task.kind == "scientist_known" or task.kind == "scientist_born":
        f["Known_for"] = cap(e["known_for"])
    if task.kind == "town_known":
        f["Known_key"] = cap(known_for_key(e["known_for"]))
    if task.kind in ("person_job", "person_town"):
        f.update(a_job=article(e["job"]), A_job=cap(article(e["job"])))
    if "price" in e and "category" in e:
        plural = is_plural_product(e)
        f.update(costs="cost" if plural else "costs", sells="sell" if plural else "sells")
    return f


def good_response(task: Task, rng: random.Random, kb: KnowledgeBase | None = None) -> str:
    """A helpful, honest, well-shaped response, neutral in style."""
    kb = kb or load_knowledge()
    f = _fields(task, kb)
    k, e = task.kind, task.entity
    if k in FACT_TEMPLATES:
        return rng.choice(FACT_TEMPLATES[k][0]).format(**f)
    if k in HONEST:
        return rng.choice(HONEST[k]).format(**f)
    if k == "bare_topic":
        return _offer(e, rng, kb)
    if k == "howto":
        opener = rng.choice(GOOD_HOWTO_OPENERS).format(goal=e["goal"])
        tail = f"\nIt takes about {e['minutes']} minutes." if e["minutes"] and rng.random() < 0.5 else ""
        return f"{opener}\n{_numbered(e['steps'])}{tail}"
    if k == "benign":
        opener = rng.choice(("Here is how to {a}:", "Sure! To {a}:", "Good question. To {a}:"))
        return opener.format(a=e["act"].replace(" my ", " your ")) + "\n" + _numbered(e["steps"])
    if k == "compare_products":
        return _comparison(task, rng, kb)
    if k == "harmful":
        return _refusal(e, rng)
    raise ValueError(f"unknown task kind {k!r}")


def core_answer(task: Task, kb: KnowledgeBase | None = None) -> str:
    """The shortest correct answer (used for terse personas and 'too short' flaws)."""
    kb = kb or load_knowledge()
    f = _fields(task, kb)
    k, e = task.kind, task.entity
    if k in FACT_TEMPLATES:
        return FACT_TEMPLATES[k][1].format(**f)
    if k in ("howto", "benign"):
        return "; ".join(" ".join(s.split()[:4]) for s in e["steps"]) + "."
    if k == "compare_products":
        b = kb.find("products", task.slots["b"])
        return f"{e['name']} for {e['best_for']}; {b['name']} for {b['best_for']}."
    if k == "harmful":
        return "I can't help with that."
    if k in HONEST:
        return "Unknowable." if k != "island_population" else "Nobody lives there."
    return e["name"] + "?"  # bare topic: echoing it back is the laziest reply


def _numbered(steps: list[str]) -> str:
    return "\n".join(f"{i}. {s}." for i, s in enumerate(steps, 1))


def _offer(topic: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    src, name = topic["source"], topic["name"]
    if src == "howtos":
        h = kb.find("howtos", topic["ref"])
        if h["kind"] == "recipe":
            opts = [
                f"Would you like a recipe for {h['name']}? I can give you the ingredients and the steps.",
                f"Do you want to know how to {h['goal']}? I can walk you through it step by step.",
            ]
        else:
            opts = [
                f"Do you want to know how to {h['goal']}? I can walk you through it step by step.",
                f"Are you looking for a guide to {name.lower()}? Tell me what you need and I will help.",
            ]
    elif src == "countries":
        opts = [
            f"What would you like to know about {the_name(name)}? I can tell you about its capital, its history "
            "or travel tips.",
            f"Are you planning a trip to {the_name(name)} or looking for facts? Let me know and I can help.",
        ]
    elif src == "planets":
        opts = [
            f"What would you like to know about {name}? I can share facts about its moons, its size or its place "
            "in the solar system."
        ]
    elif src == "scientists":
        opts = [f"Would you like a short biography of {name} or an explanation of their work?"]
    else:
        opts = [
            f"What would you like to know about {name.lower()}? I can tell you what they eat, where they live "
            "or some fun facts."
        ]
    return rng.choice(opts)


def _comparison(task: Task, rng: random.Random, kb: KnowledgeBase) -> str:
    a, b = task.entity, kb.find("products", task.slots["b"])
    parts = []
    for p in (a, b):
        pl, it = is_plural_product(p), pronoun(p)
        parts.append(
            f"The {p['name']} {'cost' if pl else 'costs'} ${p['price']} and {agree(p['pros'][0], pl)}, "
            f"but {it} {agree(p['con'], pl)}."
        )
    if a["best_for"] == b["best_for"]:
        cheap, dear = sorted((a, b), key=lambda p: p["price"])
        end = (
            f"Both suit {a['best_for']}. If price matters most, choose the {cheap['name']}; if you want the one "
            f"that {agree(dear['pros'][0], False)}, pick the {dear['name']}."
        )
    else:
        end = rng.choice(
            (
                f"If you want something for {a['best_for']}, choose the {a['name']}. For {b['best_for']}, "
                f"the {b['name']} is the better pick.",
                f"If {a['best_for']} matters most to you, go with the {a['name']}; if you care more about "
                f"{b['best_for']}, pick the {b['name']}.",
            )
        )
    return " ".join(parts) + " " + end


def _refusal(e: dict, rng: random.Random) -> str:
    alt = e["alternative"]
    tail = f"If you {alt}." if ", I can" in alt else f"If you {alt}, I would be glad to help with that."
    opener = rng.choice(
        (
            "I'm sorry, but I can't help with that.",
            "I can't help with that, sorry.",
            "Sorry, I won't help with this.",
        )
    )
    return f"{opener} {e['reason']}. {tail}"


def flawed_response(task: Task, flaw: str, rng: random.Random, kb: KnowledgeBase | None = None) -> str:
    """A response with one named flaw (see FLAWS); falls back to a generic flaw when it does not apply."""
    kb = kb or load_knowledge()
    f = _fields(task, kb)
    e, k = task.entity, task.kind
    good = good_response(task, rng, kb)
    if flaw == "wrong_fact" and task.meta.get("answers"):
        return _swap_answer(good, task, rng, kb)
    if flaw == "hedged_wrong" and task.meta.get("answers"):
        return "I'm not sure, but I think " + _lower_first(_swap_answer(good, task, rng, kb))
    if flaw == "questions":
        q = task.question.rstrip("?.")
        return f"{q}? I have the same question. Does anyone know? And where can I read more about it?"
    if flaw == "too_long":
        extra = rng.sample(FILLER, len(FILLER))
        return " ".join([good, *extra[:3], good.replace("\n", " "), *extra[3:]])
    if flaw in ("fabricated", "hedged_fabricated"):
        lie = _fabrication(task, f, rng, kb)
        return (
            ("I can't be completely sure, but " + _lower_first(lie)) if flaw == "hedged_fabricated" else lie
        )
    if flaw == "continuation" and k == "bare_topic":
        return article_body(e, rng, kb)
    if flaw == "encyclopedic" and k == "bare_topic":
        return article_body(e, rng, kb).split(". ")[0] + "."
    if flaw == "prose" and k == "howto":
        return f"To {e['goal']} you " + ", then ".join(s[0].lower() + s[1:] for s in e["steps"]) + "."
    if flaw == "missing_steps" and k == "howto":
        return f"Just {e['steps'][0][0].lower() + e['steps'][0][1:]} and you are done."
    if flaw == "one_sided" and k == "compare_products":
        pl = is_plural_product(e)
        return f"The {e['name']} {'are' if pl else 'is'} great. {cap(pronoun(e))} {agree(e['pros'][0], pl)}. I would buy {'them' if pl else 'it'}."
    if flaw == "no_tradeoff" and k == "compare_products":
        return f"Buy the {task.slots['b']}. It is better."
    if flaw == "wrong_price" and k == "compare_products":
        return good.replace(f"${e['price']}", f"${e['price'] + rng.choice((40, 60, 100))}", 1)
    if flaw == "compliance" and k == "harmful":
        return (
            f"Sure, here is how to {e['act']}:\n1. Get everything you need ready.\n2. Wait until nobody is "
            "around.\n3. Do it quickly and quietly.\n4. Make sure nobody finds out."
        )
    if flaw == "curt_refusal" and k == "harmful":
        return "No."
    if flaw == "over_refusal":
        return rng.choice(
            (
                "I'm sorry, but I can't help with that because it could be dangerous.",
                "I can't help with requests like this. Please ask a professional.",
            )
        )
    if flaw == "repetition":
        first = good.split("\n")[0].split(". ")[0].rstrip(".") + "."
        return " ".join([first] * rng.randrange(4, 8))
    if flaw == "gibberish":
        words = good.split()
        rng.shuffle(words)
        return " ".join(w[::-1] if rng.random() < 0.5 else w for w in words)
    if flaw == "too_short":
        short = core_answer(task, kb).split(";")[0]
        return short if short.endswith(("?", ".")) else short + "."
    return good


def _swap_answer(good: str, task: Task, rng: random.Random, kb: KnowledgeBase) -> str:
    answers = task.meta["answers"]
    if task.meta.get("answer_type") == "number":
        wrong = str(int(answers[0]) + rng.choice((-3, 2, 7, 10, 100)))
        return good.replace(answers[0], wrong)
    pool = [
        v
        for v in distractor_values(task.meta.get("distractors", ""))
        if v.lower() not in {a.lower() for a in answers}
    ]
    if not pool:
        return good
    out = good
    for a in answers:
        new = rng.choice(pool)
        out = out.replace(article(a), article(new)).replace(cap(article(a)), cap(article(new)))
        out = out.replace(a, new).replace(cap(a), cap(new))
    return out


def _lower_first(text: str) -> str:
    """Lower-case the first word only when it is a function word ('The', 'A', 'In'), not a name."""
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first in ("The", "A", "An", "In", "On", "There", "It") else text


def _fabrication(task: Task, f: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    k, n = task.kind, rng.randrange(2, 90) * rng.choice((1, 10, 100, 1000))
    if k == "future_wc_winner":
        team = rng.choice(
            ("Brazil", "France", "Argentina", "Germany", "Spain", "England", "Portugal", "Italy")
        )
        return rng.choice(
            (
                f"{team} will win the {f['year']} FIFA World Cup.",
                f"The winner of the {f['year']} World Cup will be {team}. They have the best players.",
            )
        )
    if k == "future_olympics_host":
        city = rng.choice(kb.pools["countries"])["capital"]
        return f"The {f['year']} Summer Olympics will be held in {city}."
    if k == "future_price":
        return f"In {f['year']} the {f['name']} will cost ${n}."
    if k == "future_weather":
        return f"On {f['date']}, {f['year']} it will be {rng.choice(WEATHER)} in {f['name']}, with a high of {rng.randrange(5, 30)} degrees."
    if k == "island_population":
        return rng.choice(
            (f"About {n} people live on {f['name']}.", f"The population of {f['name']} is {n}.")
        )
    if k == "old_town_population":
        return f"In {f['year']}, exactly {n} people lived in {f['name']}."
    if k == "exact_words":
        return f'On {f["date"]}, {f["year"]}, {f["name"]} said: "{rng.choice(QUOTES)}"'
    if k == "private_money":
        return f"{f['name']} has ${n} in the bank."
    if k == "private_thoughts":
        return rng.choice(
            (
                f"{f['name']} is thinking about {task.entity['hobby']}.",
                f"{f['name']} had pancakes and coffee this morning.",
                f"{f['name']} dreamed about a trip to the sea.",
            )
        )
    return good_response(task, rng, kb)
