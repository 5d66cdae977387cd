"""The demo world's knowledge base: curated real facts plus a generated fictional catalogue.

Real facts (countries and capitals, planets, scientists, Olympic and World Cup hosts, recipes and how-to
tasks, animals, units, uninhabited islands) live as CSV/JSON files in ``world/data/`` so anyone can check and
correct them. The fictional catalogue (products with prices and trade-offs, people, towns) is generated from
``catalogue_parts.json`` with a *fixed* seed, independent of the build seed: every world, whatever its seed,
shares the same entities, so the gold judge can check any world's answers without knowing how it was built.
The build seed only changes which documents, chats and prompts are sampled.
"""

from __future__ import annotations

import csv
import json
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

CATALOGUE_SEED = 20240601  # fixed on purpose: see the module docstring


@dataclass
class KnowledgeBase:
    """All entities of the world, one list per pool, plus a lower-cased name index per pool."""

    pools: dict[str, list[dict]]
    personas: dict[str, dict]
    index: dict[str, dict[str, dict]] = field(default_factory=dict)
    practice: bool = False  # a made-up catalogue (`practice_knowledge`): no entity of it is held out

    def __post_init__(self) -> None:
        self.index = {
            pool: {str(e["name"]).lower(): e for e in entities} for pool, entities in self.pools.items()
        }

    def find(self, pool: str, name: str) -> dict | None:
        return self.index.get(pool, {}).get(name.strip().lower())


def is_eval_entity(pool: str, name: str) -> bool:
    """Stable 1-in-5 split of entities into the held-out evaluation set (independent of any seed)."""
    return zlib.crc32(f"{pool}:{name}".encode()) % 5 == 0


def _data_text(name: str) -> str:
    return resources.files("rlhfkit.world").joinpath("data").joinpath(name).read_text(encoding="utf-8")


def _csv(name: str) -> list[dict]:
    return [dict(row) for row in csv.DictReader(_data_text(name).splitlines())]


def _curated() -> dict[str, list[dict]]:
    countries = [dict(r, name=r["country"]) for r in _csv("countries.csv")]
    planets = [dict(r, name=r["planet"]) for r in _csv("planets.csv")]
    scientists = [dict(r, keywords=r["keywords"].split("|")) for r in _csv("scientists.csv")]
    sports = []
    for r in _csv("sports.csv"):
        hosts = r["city"] or r["country"]
        sports.append(dict(r, name=f"{r['year']} {r['event']}", host=hosts))
    animals = _csv("animals.csv")
    units = [dict(r, name=f"{r['small']} in a {r['big']}") for r in _csv("units.csv")]
    islands = _csv("islands.csv")
    howtos = json.loads(_data_text("howto.json"))
    requests = json.loads(_data_text("requests.json"))
    harmful = [dict(r, name=r["act"]) for r in requests["harmful"]]
    benign = [dict(r, name=r["act"]) for r in requests["benign"]]
    topics = _topics(countries, planets, scientists, animals, howtos)
    return {
        "countries": countries,
        "planets": planets,
        "scientists": scientists,
        "summer": [s for s in sports if s["event"] == "Summer Olympics"],
        "winter": [s for s in sports if s["event"] == "Winter Olympics"],
        "worldcup": [s for s in sports if s["event"] == "FIFA World Cup"],
        "animals": animals,
        "units": units,
        "islands": islands,
        "howtos": howtos,
        "recipes": [h for h in howtos if h["kind"] == "recipe"],
        "harmful": harmful,
        "benign": benign,
        "topics": topics,
    }


def _topics(countries: list, planets: list, scientists: list, animals: list, howtos: list) -> list[dict]:
    """Bare-topic prompts ("Baking chocolate cake"): what a user might type when they want help with a topic."""
    topics = [
        dict(name=h["title"], source="howtos", ref=h["name"], offer="a step-by-step guide") for h in howtos
    ]
    topics += [
        dict(name=c["name"], source="countries", ref=c["name"], offer="facts or travel tips")
        for c in countries
    ]
    topics += [
        dict(name=p["name"], source="planets", ref=p["name"], offer="facts about the planet") for p in planets
    ]
    topics += [
        dict(name=s["name"], source="scientists", ref=s["name"], offer="a short biography")
        for s in scientists
    ]
    topics += [
        dict(name=a["plural"].capitalize(), source="animals", ref=a["name"], offer="facts about them")
        for a in animals
        if a["plural"] != a["name"]
    ]
    return topics


def _word(rng: random.Random, syllables: list[str], n: int) -> str:
    return "".join(rng.choice(syllables) for _ in range(n)).capitalize()


def _distinct(n: int, draw: Callable[[], str]) -> Iterator[str]:
    """`n` different names from `draw()`: one drawn before is drawn again. Each name is used (and the draws
    for its record made) before the next is drawn, so the catalogue stays a pure function of its seed."""
    seen: set[str] = set()
    while len(seen) < n:
        name = draw()
        if name not in seen:
            seen.add(name)
            yield name


def _catalogue(parts: dict, seed: int = CATALOGUE_SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    syl = parts["syllables"]
    towns = []
    for name in _distinct(
        50, lambda: _word(rng, syl, rng.choice([1, 2])) + rng.choice(parts["town_suffixes"])
    ):
        towns.append(
            {
                "name": name,
                "region": rng.choice(parts["regions"]),
                "population": rng.randrange(80, 9000) * 10,
                "founded": rng.randrange(1100, 1900),
                "known_for": rng.choice(parts["town_known_for"]),
                "river": "the River " + _word(rng, syl, 2),
            }
        )
    people = []
    for name in _distinct(120, lambda: f"{rng.choice(parts['first_names'])} {_word(rng, syl, 2)}"):
        people.append(
            {
                "name": name,
                "job": rng.choice(parts["jobs"]),
                "town": rng.choice(towns)["name"],
                "hobby": rng.choice(parts["hobbies"]),
                "age": rng.randrange(25, 75),
            }
        )
    products, seen = [], set()
    for category, spec in parts["products"].items():
        made = 0
        while made < 8:
            brand = _word(rng, syl, 2)
            name = f"{brand} {rng.choice('KLMSTVXZ')}{rng.randrange(1, 10)} {category}"
            if name in seen:
                continue
            seen.add(name)
            made += 1
            lo, hi = spec["price"]
            price = max(lo, (rng.randrange(lo, hi) // 10) * 10 + 9)
            pros = rng.sample(spec["pros"], 2)
            products.append(
                {
                    "name": name,
                    "brand": brand,
                    "category": category,
                    "price": price,
                    "pros": pros,
                    "con": rng.choice(spec["cons"]),
                    "best_for": rng.choice(spec["best_for"]),
                    "rating": rng.choice([3, 4, 4, 5]),
                }
            )
    return {"towns": towns, "people": people, "products": products}


PRACTICE_CATALOGUES = 256  # made-up catalogues there are (seeds 1..256), all kept once made


@lru_cache(maxsize=PRACTICE_CATALOGUES)
def practice_knowledge(seed: int) -> KnowledgeBase:
    """The world with a made-up catalogue in place of its own: other products, towns and people, drawn the same
    way from `seed` (none named as one of the world's), and the same curated pools and personas.

    Why: tool demonstrations over the world's 80-odd products teach a tiny model to look up the names it has
    memorised, not the one the question asks about, and the held-out questions name products it never saw
    (docs/methods.md, "Tools and multi-turn rollouts"). Practice catalogues give it thousands of names seen once
    each, so the only way to the right lookup is to copy the name from the question."""
    world = load_knowledge()
    fresh = _catalogue(json.loads(_data_text("catalogue_parts.json")), seed)
    pools = dict(world.pools)
    for pool, entities in fresh.items():
        taken = {str(e["name"]).lower() for e in world.pools[pool]}
        pools[pool] = [e for e in entities if str(e["name"]).lower() not in taken]
    return KnowledgeBase(pools=pools, personas=world.personas, practice=True)


@lru_cache(maxsize=1)
def load_knowledge() -> KnowledgeBase:
    """Load the curated data and generate the catalogue (cached: the world never changes in a process)."""
    pools = _curated()
    pools.update(_catalogue(json.loads(_data_text("catalogue_parts.json"))))
    personas = json.loads(_data_text("personas.json"))
    return KnowledgeBase(pools=pools, personas=personas)
