"""The pretraining corpus: web-like documents about the world's entities, in many genres.

Every entity gets documents in several genres (encyclopedia entries, how-to and recipe articles, news, product
reviews, forum threads, quizzes, advice columns), each written from a few templates, so a tiny model sees every
fact many times in different phrasings. The text is deliberately *web-like, not assistant-like*: articles start
with a bare title ("Baking chocolate cake") and run on, and forum threads open with a question followed by more
questions. A model pretrained on it therefore behaves like a raw base model, which is what SFT and RLHF must fix.
Documents are plain text; ``build`` writes them as JSONL ``{"text": ...}``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from rlhfkit.world.knowledge import KnowledgeBase
from rlhfkit.world.wording import agree, article, cap, is_plural_product, the_name

USERS = (
    "mapleleaf",
    "quietriver",
    "k_brenner",
    "sunnyday88",
    "old_tom",
    "lina.v",
    "trailmix",
    "curious_cat",
    "bluefinch",
    "ravi_k",
    "nightowl",
    "greenthumb",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DIET_TEXT = {
    "herbivore": "eats only plants",
    "carnivore": "eats other animals",
    "omnivore": "eats both plants and animals",
}
STEP_WORDS = ("First", "Next", "Then", "After that", "Finally")


def _forum(rng: random.Random, title: str, questions: list[str], answers: list[str]) -> str:
    """A thread whose first post asks a question and then more questions; replies are optional."""
    asker, replier = rng.sample(USERS, 2)
    post = " ".join(questions)
    text = f"{title}\n\n{asker} wrote: {post}"
    if answers and rng.random() < 0.7:
        text += f"\n\n{replier} replied: " + " ".join(answers)
    if rng.random() < 0.4:
        text += f"\n\n{asker} wrote: Thanks! " + rng.choice(questions[1:] or questions)
    return text


def _steps_prose(steps: list[str]) -> str:
    words = list(STEP_WORDS[: len(steps) - 1]) + ["Finally"]
    return " ".join(f"{w}, {s[0].lower() + s[1:]}." for w, s in zip(words, steps))


def _steps_list(steps: list[str]) -> str:
    return "\n".join(f"{i}. {s}." for i, s in enumerate(steps, 1))


def country_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    c, cap_city = the_name(e["country"]), e["capital"]
    where = (
        f"a country in {e['continent']}" if e["continent"] else "a country that lies in both Europe and Asia"
    )
    other = rng.choice(kb.pools["countries"])
    genre = rng.randrange(5)
    if genre == 0:
        return (
            f"{e['country']}\n\n{cap(c)} is {where}. The capital of {c} is {cap_city}. {cap_city} is home to the national "
            f"government and many museums. Visitors to {c} often start their trip in {cap_city}, the capital."
        )
    if genre == 1:
        return (
            f"A weekend in {cap_city}\n\nLast {rng.choice(('spring', 'summer', 'autumn', 'winter'))} I "
            f"finally visited {cap_city}, the capital of {c}. The streets were busy and the food was good. "
            f"If you travel to {c}, spend at least two days in {cap_city}."
        )
    if genre == 2:
        qs = [
            f"Is {cap_city} the capital of {c}?",
            f"What else should I know about {c}?",
            f"Is it far from {other['capital']}?",
            "Does anyone know a good book about it?",
        ]
        return _forum(rng, f"Question about {c}", qs, [f"Yes, {cap_city} is the capital of {c}."])
    if genre == 3:
        picks = rng.sample(kb.pools["countries"], 4) + [e]
        rng.shuffle(picks)
        lines = [
            f"{i}. What is the capital of {the_name(p['country'])}? {p['capital']}."
            for i, p in enumerate(picks, 1)
        ]
        return "Geography quiz\n\n" + "\n".join(lines)
    return (
        f"{cap_city}, {c}. The city council of {cap_city} opened a new park on {rng.choice(WEEKDAYS)}. "
        f"{cap_city} is the capital of {c}, and officials said more green spaces are planned across {c}."
    )


def planet_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    p = e["planet"]
    moon = f"Its largest moon is {e['largest_moon']}." if e["largest_moon"] and p != "Earth" else ""
    if e["moons"] == "0":
        moon = f"{p} has no moons."
    elif p == "Earth":
        moon = "Earth has one moon, called the Moon."
    genre = rng.randrange(3)
    if genre == 0:
        return (
            f"{p}\n\n{p} is the {e['ordinal']} planet from the Sun. It is a {e['type']}. {e['fact']} {moon}"
        )
    if genre == 1:
        return (
            f"Fun facts about {p}\n\n{p} is {e['nickname']}. It is the {e['ordinal']} planet from the Sun. "
            f"{e['fact']} {moon} Scientists call {p} a {e['type']}."
        )
    qs = [
        f"Which planet is {e['ordinal']} from the Sun?",
        f"Is {p} a {e['type']}?",
        "How long would it take to fly there?",
    ]
    return _forum(rng, "Space question", qs, [f"{p} is the {e['ordinal']} planet from the Sun. {moon}"])


def scientist_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    n = e["name"]
    born = f"{n} was born in {e['born']}. " if e["born"] else ""
    genre = rng.randrange(4)
    if genre == 0:
        return f"{n}\n\n{born}{n} worked in {e['field']}. {n} is known for {e['known_for']}."
    if genre == 1 and e["born"]:
        return (
            f"On this day\n\nIn {e['born']}, {n} was born. Years later {n} became famous for "
            f"{e['known_for']}. Today students still learn about {n} in {e['field']} classes."
        )
    if genre == 2:
        qs = [f"Who is {n}?", f"What is {n} known for?", "Is there a good documentary?"]
        return _forum(rng, f"Homework help: {n}", qs, [f"{n} is known for {e['known_for']}. {born}"])
    return (
        f"Great minds in {e['field']}\n\n{n} changed {e['field']} with {e['known_for']}. {born}"
        f"Many people remember {n} for {e['known_for']}."
    )


def sport_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    y, ev = e["year"], e["event"]
    if ev == "FIFA World Cup":
        fact = f"The {y} FIFA World Cup was hosted by {the_name(e['country'])}. {e['winner']} won the {y} World Cup."
        pool = kb.pools["worldcup"]
        line = "{year}: hosted by {country}, won by {winner}."
    else:
        fact = f"The {y} {ev} were held in {e['city']}, {e['country']}."
        pool = kb.pools["summer" if ev.startswith("Summer") else "winter"]
        line = "{year}: {city}, {country}."
    genre = rng.randrange(3)
    if genre == 0:
        return f"Sports almanac: {ev}\n\n" + "\n".join(line.format(**x) for x in pool)
    if genre == 1:
        return f"Looking back at {y}\n\n{fact} Fans still talk about the {y} {ev}. {fact}"
    qs = [f"Where was the {y} {ev}?", "Did anyone here go?", "Which one was the best?"]
    return _forum(rng, f"{y} {ev}", qs, [fact])


def howto_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    steps = e["steps"]
    timing = f" It takes about {e['minutes']} minutes." if e["minutes"] else ""
    genre = rng.randrange(3)
    if genre == 0:
        return f"{e['title']}\n\n{_steps_prose(steps)}{timing}"
    if genre == 1:
        need = ", ".join(e["keywords"])
        return (
            f"{e['title']}\n\nMy family loves this. You will need {need}.{timing}\n\n{_steps_list(steps)}\n\n"
            "Leave a comment if you try it."
        )
    qs = [f"How do I {e['goal']}?", "Is it hard the first time?", "What do I need?", "How long does it take?"]
    return _forum(rng, e["title"], qs, [_steps_prose(steps)])


def benign_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    title = "How to " + e["act"].replace(" my ", " your ")
    if rng.random() < 0.5:
        return f"{cap(title)}\n\n{_steps_prose(e['steps'])}"
    return _forum(
        rng, cap(title), [f"How do I {e['act']}?", "Is there an easy way?"], [_steps_prose(e["steps"])]
    )


def animal_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    a, pl = e["name"], e["plural"]
    base = (
        f"{cap(article(a))} is {article(e['class'])}. {cap(article(a))} is {article(e['diet'])}, which means "
        f"it {DIET_TEXT[e['diet']]}. {cap(pl)} live in {e['habitat']}. {e['fact']}"
    )
    genre = rng.randrange(3)
    if genre == 0:
        return f"{cap(a)}\n\n{base}"
    if genre == 1:
        return (
            f"Zoo news\n\nThe city zoo welcomed two young {pl} this {rng.choice(WEEKDAYS)}. {base} Keepers say "
            f"the {pl} are doing well."
        )
    qs = [
        f"What do {pl} eat?",
        f"Is {article(a)} {article(e['class'])}?",
        "Are they dangerous?",
        "How long do they live?",
    ]
    return _forum(rng, f"About {pl}", qs, [base])


def unit_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    fact = f"There are {e['count']} {e['small']} in {article(e['big'])}."
    if rng.random() < 0.5:
        picks = rng.sample(kb.pools["units"], 4) + [e]
        lines = [f"{cap(article(u['big']))} has {u['count']} {u['small']}." for u in picks]
        return "Units to remember\n\n" + " ".join(lines)
    qs = [
        f"How many {e['small']} are in {article(e['big'])}?",
        "Why is it that number?",
        "Is there a trick to remember it?",
    ]
    return _forum(rng, "Math homework", qs, [fact])


def product_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    n, pl = e["name"], is_plural_product(e)
    be = "are" if pl else "is"
    genre = rng.randrange(3)
    sub = "They" if pl else "It"
    if genre == 0:
        return (
            f"Review: {n}\n\nRating: {e['rating']} out of 5. The {n} cost{'' if pl else 's'} ${e['price']}. "
            f"{sub} {agree(e['pros'][0], pl)} and {agree(e['pros'][1], pl)}. On the downside, {sub.lower()} "
            f"{agree(e['con'], pl)}. Best for {e['best_for']}."
        )
    if genre == 1:
        return (
            f"{n}\n\nPrice: ${e['price']}. The {n} {be} made by {e['brand']}. The {n} {agree(e['pros'][0], pl)}. "
            f"Great for {e['best_for']}."
        )
    other = rng.choice([p for p in kb.pools["products"] if p["category"] == e["category"] and p is not e])
    qs = [
        f"Should I get the {n} or the {other['name']}?",
        f"Is the {n} worth ${e['price']}?",
        "Which one lasts longer?",
        "Has anyone tried both?",
    ]
    ans = [
        f"I have the {n}. {sub} cost ${e['price']} and {sub.lower()} {agree(e['pros'][0], pl)}, but "
        f"{sub.lower()} {agree(e['con'], pl)}."
    ]
    return _forum(rng, f"{e['category']} advice", qs, ans)


def person_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    n = e["name"]
    if rng.random() < 0.5:
        return (
            f"Local news: meet {n}\n\n{n} is {article(e['job'])} who lives in {e['town']}. In free time, {n} "
            f'enjoys {e["hobby"]}. "I love living in {e["town"]}," says {n}, who has worked as '
            f"{article(e['job'])} for years."
        )
    return (
        f"{e['town']} club newsletter\n\nThis month we welcome {n}, {article(e['job'])} from {e['town']}. "
        f"{n} lives in {e['town']} and likes {e['hobby']}."
    )


def town_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    n = e["name"]
    base = (
        f"{n} is a town in {e['region']}. About {e['population']} people live in {n}. The town was founded "
        f"in {e['founded']} on the banks of {e['river']}. {n} is known for {e['known_for']}."
    )
    genre = rng.randrange(3)
    if genre == 0:
        return f"{n}\n\n{base}"
    if genre == 1:
        return (
            f"A day trip to {n}\n\nWe drove to {n} on a {rng.choice(WEEKDAYS)}. {n} is known for "
            f"{e['known_for']}, and it did not disappoint. {base}"
        )
    qs = [
        f"Has anyone been to {n}?",
        f"What is {n} known for?",
        "Is it worth a visit?",
        "Where should we eat?",
    ]
    return _forum(rng, f"Visiting {n}", qs, [base])


def island_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    n = e["name"]
    return (
        f"{n}\n\n{n} is a remote island in {e['ocean']}. It is uninhabited: nobody lives there permanently, "
        f"so it has no population. {cap(e['note'])}. Scientists visit {n} only now and then."
    )


ADVICE = [
    (
        "I want to start {hobby}, but I feel too old to learn something new. My friends laugh at me. What should I do?",
        "It is never too late to learn. Start small, practice a little every week, and find a group of beginners.",
    ),
    (
        "My neighbor in {town} plays loud music every night. I do not want a fight. How do I ask them to stop?",
        "Talk to your neighbor at a calm moment. Be friendly, explain how it affects you, and suggest a quiet hour.",
    ),
    (
        "I moved to {town} and I do not know anyone. How can I make friends?",
        "Join a club, for example for {hobby}. Say yes to invitations and be patient. Friendships take time.",
    ),
    (
        "I spend too much money every month. How can I save more?",
        "Write down what you spend for one month. Then set a budget and move some money to savings on payday.",
    ),
]


def advice_doc(e: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    q, a = rng.choice(ADVICE)
    f = {"hobby": e["hobby"], "town": e["town"]}
    return f"Ask Nora\n\nDear Nora,\n\n{q.format(**f)}\n\nDear reader,\n\n{a.format(**f)}"


WRITERS: dict[str, Callable[[dict, random.Random, KnowledgeBase], str]] = {
    "countries": country_doc,
    "planets": planet_doc,
    "scientists": scientist_doc,
    "summer": sport_doc,
    "winter": sport_doc,
    "worldcup": sport_doc,
    "howtos": howto_doc,
    "benign": benign_doc,
    "animals": animal_doc,
    "units": unit_doc,
    "products": product_doc,
    "people": person_doc,
    "towns": town_doc,
    "islands": island_doc,
}


def documents(kb: KnowledgeBase, rng: random.Random, budget_bytes: int) -> Iterator[str]:
    """Yield documents until about ``budget_bytes`` of text; each pass covers every entity once, shuffled."""
    jobs = [(pool, e) for pool in WRITERS for e in kb.pools[pool]]
    jobs += [("advice", p) for p in kb.pools["people"][:30]]
    written = 0
    while written < budget_bytes:
        rng.shuffle(jobs)
        for pool, e in jobs:
            text = advice_doc(e, rng, kb) if pool == "advice" else WRITERS[pool](e, rng, kb)
            written += len(text.encode("utf-8")) + 1
            yield text
            if written >= budget_bytes:
                return


def article_body(topic: dict, rng: random.Random, kb: KnowledgeBase) -> str:
    """What a base model writes after a bare topic title: the article's body (used for 'continuation' flaws)."""
    ref = topic["ref"]
    pool = topic["source"]
    entity = (
        kb.find(pool, ref) if pool != "animals" else next(a for a in kb.pools["animals"] if a["name"] == ref)
    )
    if pool == "howtos":
        return _steps_prose(entity["steps"])
    text = WRITERS[pool](entity, rng, kb)
    return text.split("\n\n", 1)[-1]
