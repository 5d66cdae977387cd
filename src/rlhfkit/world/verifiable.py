"""Verifiable tasks of the demo world: questions over the knowledge base whose answer a program can check.

Kinds: arithmetic (`price_total`: "How much do 3 Lomar K3 phones and 2 Molun L3 umbrellas cost?";
`born_gap`: "How many years after X was Y born?"; `founded_gap`: how many years older one town is than
another), comparison (`cheapest`: "Which of these four phones is cheapest?") and counting (`count_below`:
"How many of these cost less than $100?"). Like the world's other kinds, each has `train` templates (SFT
demonstrations, RL prompts) and disjoint `eval` templates; for pools big enough to hold entities out
(`tasks.HOLDOUT_MIN_POOL`), a train task uses no held-out entity and an eval task at least one, so no
evaluation question was seen in training.

Each task carries its `answer`, the `steps` that reach it (look-ups in the knowledge base, then arithmetic or
comparisons, each with its value: what a process reward or a tool-using demonstration needs) and a
`difficulty`, the number of steps. `verifier.verify` checks a reply against the answer.

These tasks live apart from `tasks.KINDS` and draw from their own random streams, so the default world's
files stay byte-identical (`build.build_world` never calls this module).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhfkit.world.knowledge import KnowledgeBase, is_eval_entity, load_knowledge
from rlhfkit.world.tasks import HOLDOUT_MIN_POOL
from rlhfkit.world.wording import article, is_plural_product

CATEGORY = "verifiable"
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class VerifiableKind:
    name: str
    pool: str
    train: tuple[str, ...]
    eval: tuple[str, ...]


VERIFIABLE_KINDS: dict[str, VerifiableKind] = {
    k.name: k
    for k in [
        VerifiableKind(
            "price_total",
            "products",
            ("How much do {items} cost?", "What is the total price of {items}?"),
            ("What would {items} cost altogether?", "If I buy {items}, how much do I pay in total?"),
        ),
        VerifiableKind(
            "born_gap",
            "scientists",
            ("How many years after {a} was {b} born?", "{b} was born how many years after {a}?"),
            ("How many years passed between the births of {a} and {b}?",),
        ),
        VerifiableKind(
            "founded_gap",
            "towns",
            ("How many years older is {a} than {b}?", "How many years before {b} was {a} founded?"),
            ("{a} was founded how many years before {b}?",),
        ),
        VerifiableKind(
            "cheapest",
            "products",
            ("Which of these {n} {things} is {sup}: {options}?", "Of {options}, which is {sup}?"),
            ("I am looking at {options}. Which one is {sup}?",),
        ),
        VerifiableKind(
            "count_below",
            "products",
            ("How many of these {n} {things} cost less than ${limit}: {options}?",),
            ("Of {options}, how many are priced under ${limit}?",),
        ),
    ]
}


@dataclass
class VerifiableTask:
    kind: str
    question: str
    meta: dict  # kind, task, answer (and choices, answer_cues), steps, difficulty


def _pool(kb: KnowledgeBase, kind: VerifiableKind) -> list[dict]:
    pool = kb.pools[kind.pool]
    return [e for e in pool if kind.pool != "scientists" or e.get("born")]


def _draw(
    kb: KnowledgeBase, kind: VerifiableKind, rng: random.Random, split: str, n: int, ok=None, pool=None
) -> list[dict]:
    """`n` distinct entities of `pool` (default: the kind's): none held out for train, at least one held out
    for eval (pools of `HOLDOUT_MIN_POOL` entities or more), and `ok(entities)` when given."""
    pool = pool or _pool(kb, kind)
    # A practice catalogue's entities are made up: none is a held-out entity of the world (`practice_knowledge`).
    holds_out = len(kb.pools[kind.pool]) >= HOLDOUT_MIN_POOL and not kb.practice
    for _ in range(1000):
        picked = rng.sample(pool, n)
        held = [is_eval_entity(kind.pool, e["name"]) for e in picked]
        if holds_out and (any(held) if split == "train" else not any(held)):
            continue
        if ok is None or ok(picked):
            return picked
    raise RuntimeError(f"no {split} entities for {kind.name}")  # cannot happen with the shipped pools


def _category_products(kb: KnowledgeBase, rng: random.Random, split: str, n: int) -> list[dict]:
    """The products of one category drawn at random among those that can hold a task of `n` products."""
    by_category: dict[str, list[dict]] = {}
    for p in kb.pools["products"]:
        by_category.setdefault(p["category"], []).append(p)

    def usable(ps: list[dict]) -> bool:
        if kb.practice:  # made-up prices may repeat: a comparison needs n different ones
            return len({p["price"] for p in ps}) >= n
        held = sum(is_eval_entity("products", p["name"]) for p in ps)
        return held >= 1 if split == "eval" else len(ps) - held >= n

    return by_category[rng.choice(sorted(c for c, ps in by_category.items() if usable(ps)))]


def _short(p: dict) -> str:
    """'Lomar K3 phone' -> 'Lomar K3': the words that name a product among others of its category."""
    return p["name"][: -len(p["category"])].strip()


def _plural(p: dict, count: int) -> str:
    if is_plural_product(p):
        return ("a pair of " if count == 1 else f"{count} pairs of ") + p["name"]
    if count == 1:
        return article(p["name"])
    return f"{count} {p['name']}" + ("es" if p["name"].endswith(("sh", "ch", "x", "s")) else "s")


def _things(category: str) -> str:
    if category in ("headphones", "running shoes"):
        return f"pairs of {category}"
    return category + ("es" if category.endswith(("sh", "ch", "x", "s")) else "s")


def _options(products: list[dict]) -> str:
    names = [f"the {p['name']}" for p in products]
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def _lookup(entity: str, field: str, value) -> dict:
    return {"op": "lookup", "of": entity, "field": field, "value": value}


def _price_total(kind, rng, split, kb) -> tuple[dict, dict]:
    terms = rng.choice((1, 2, 2, 3))
    products = _draw(kb, kind, rng, split, terms)
    counts = [rng.randrange(2, 6) if terms == 1 else rng.randrange(1, 5) for _ in products]
    steps, subtotals = [], []
    for p, c in zip(products, counts):
        steps.append(_lookup(p["name"], "price", p["price"]))
        if c > 1:
            steps.append({"op": "mul", "args": [c, p["price"]], "value": c * p["price"]})
        subtotals.append(c * p["price"])
    total = subtotals[0]
    for s in subtotals[1:]:
        steps.append({"op": "add", "args": [total, s], "value": total + s})
        total += s
    items = [_plural(p, c) for p, c in zip(products, counts)]
    phrase = items[0] if terms == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"
    return {"items": phrase}, {"answer": total, "steps": steps}


def _gap(kind, rng, split, kb, field: str) -> tuple[dict, dict]:
    a, b = _draw(kb, kind, rng, split, 2, ok=lambda es: int(es[0][field]) != int(es[1][field]))
    a, b = sorted((a, b), key=lambda e: int(e[field]))  # a: born (founded) first
    ya, yb = int(a[field]), int(b[field])
    steps = [_lookup(a["name"], field, ya), _lookup(b["name"], field, yb)]
    steps.append({"op": "sub", "args": [yb, ya], "value": yb - ya})
    return {"a": a["name"], "b": b["name"]}, {"answer": yb - ya, "steps": steps}


def _cheapest(kind, rng, split, kb) -> tuple[dict, dict]:
    n = rng.choice((2, 3, 4))
    pool = _category_products(kb, rng, split, n)
    products = _draw(kb, kind, rng, split, n, lambda ps: len({p["price"] for p in ps}) == n, pool)
    lowest = rng.random() < 0.6
    steps = [_lookup(p["name"], "price", p["price"]) for p in products]
    best = products[0]
    for p in products[1:]:
        keep = p if (p["price"] < best["price"]) == lowest else best
        steps.append(
            {"op": "min" if lowest else "max", "args": [best["price"], p["price"]], "value": keep["price"]}
        )
        best = keep
    slots = {
        "n": COUNT_WORDS[n],
        "things": _things(products[0]["category"]),
        "sup": "cheapest" if lowest else "the most expensive",
        "options": _options(products),
    }
    cues = ["cheapest", "least expensive"] if lowest else ["most expensive", "priciest"]
    meta = {"answer": _short(best), "choices": [_short(p) for p in products], "answer_cues": cues}
    return slots, {**meta, "steps": steps}


def _count_below(kind, rng, split, kb) -> tuple[dict, dict]:
    n = rng.choice((3, 4, 5))
    products = _draw(kb, kind, rng, split, n, pool=_category_products(kb, rng, split, n))
    prices = sorted({p["price"] for p in products})
    limit = rng.choice([(x // 10 + 1) * 10 for x in prices] + [(prices[0] // 10) * 10])
    steps = [_lookup(p["name"], "price", p["price"]) for p in products]
    steps += [{"op": "lt", "args": [p["price"], limit], "value": p["price"] < limit} for p in products]
    things = _things(products[0]["category"])
    slots = {"n": COUNT_WORDS[n], "things": things, "limit": limit, "options": _options(products)}
    return slots, {"answer": sum(p["price"] < limit for p in products), "steps": steps}


SAMPLERS = {
    "price_total": _price_total,
    "born_gap": lambda kind, rng, split, kb: _gap(kind, rng, split, kb, "born"),
    "founded_gap": lambda kind, rng, split, kb: _gap(kind, rng, split, kb, "founded"),
    "cheapest": _cheapest,
    "count_below": _count_below,
}


def sample_verifiable(
    kind_name: str, rng: random.Random, split: str = "train", kb: KnowledgeBase | None = None
) -> VerifiableTask:
    """One task of a kind from the `train` or `eval` templates and entities."""
    kb = kb or load_knowledge()
    kind = VERIFIABLE_KINDS[kind_name]
    slots, meta = SAMPLERS[kind_name](kind, rng, split, kb)
    template = rng.choice(kind.eval if split == "eval" else kind.train)
    question = template.format(**slots)
    question = question[:1].upper() + question[1:]
    meta = {"kind": kind_name, "task": CATEGORY, **meta, "difficulty": len(meta["steps"])}
    return VerifiableTask(kind_name, question, meta)


def verifiable_records(n: int, rng: random.Random, split: str, prefix: str) -> list[dict]:
    """`n` distinct prompt records `{id, messages, category, kind, meta}`, kinds in turn."""
    kb = load_knowledge()
    kinds = list(VERIFIABLE_KINDS)
    seen: set[str] = set()
    out: list[dict] = []
    misses = 0
    while len(out) < n and misses < 100 * n + 1000:
        task = sample_verifiable(kinds[len(out) % len(kinds)], rng, split, kb)
        if task.question in seen:
            misses += 1
            continue
        seen.add(task.question)
        out.append(
            {
                "id": f"{prefix}-{len(out):06d}",
                "messages": [{"role": "user", "content": task.question}],
                "category": CATEGORY,
                "kind": task.kind,
                "meta": task.meta,
            }
        )
    return out
