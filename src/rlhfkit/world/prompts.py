"""Prompts for sampling and RL (``prompts.jsonl``) and the held-out evaluation set (``eval_prompts.jsonl``).

Both cover every category with equal weight. RL prompts use the ``train`` templates and entities; evaluation
prompts use the ``eval`` templates, held-out entities (for pools big enough to hold some out) and eval-only
persona system prompts, so evaluation measures generalization rather than memorized prompts. Prompts are
de-duplicated; a category that runs out of distinct prompts leaves its share to the others.
"""

from __future__ import annotations

import random

from rlhfkit.world.knowledge import KnowledgeBase, load_knowledge
from rlhfkit.world.tasks import CATEGORIES, KINDS, PERSONA_INNER, Task, sample_task

KINDS_BY_CATEGORY = {c: [k.name for k in KINDS.values() if k.category == c] for c in CATEGORIES}


def sample_prompt(
    category: str, rng: random.Random, split: str = "train", kb: KnowledgeBase | None = None
) -> tuple[list[dict], Task, dict]:
    """One prompt of a category: (messages without the answer, the underlying task, meta for the judge)."""
    kb = kb or load_knowledge()
    if category == "persona":
        persona = rng.choice(sorted(kb.personas))
        system = rng.choice(kb.personas[persona][split])
        task = sample_task(rng.choice(PERSONA_INNER), rng, split, kb)
        meta = {**task.meta, "persona": persona}
        return [{"role": "system", "content": system}, {"role": "user", "content": task.question}], task, meta
    task = sample_task(rng.choice(KINDS_BY_CATEGORY[category]), rng, split, kb)
    return [{"role": "user", "content": task.question}], task, dict(task.meta)


def prompt_records(
    n: int, rng: random.Random, split: str, prefix: str, allow_repeats: bool = False
) -> list[dict]:
    """``n`` prompt records ``{id, messages, category, kind, meta}``, categories balanced.

    Prompts are distinct unless ``allow_repeats``: then a category that runs out of distinct prompts keeps its
    share with repeated questions. RL prompts need that: the few distinct harmful requests would otherwise be
    ~4% of the rollouts, too few for the reward model to learn that refusing them is right while refusing
    benign look-alikes is wrong (and PPO then learns to stop refusing altogether).
    """
    kb = load_knowledge()
    seen: set[tuple[str, ...]] = set()
    records: list[dict] = []
    open_categories = list(CATEGORIES)
    misses = dict.fromkeys(CATEGORIES, 0)
    i = 0
    while len(records) < n and open_categories:
        category = open_categories[i % len(open_categories)]
        i += 1
        messages, task, meta = sample_prompt(category, rng, split, kb)
        key = tuple(m["content"] for m in messages)
        if key in seen and misses[category] <= 200:
            misses[category] += 1
            if misses[category] > 200 and not allow_repeats:  # this category has no new prompts left
                open_categories.remove(category)
            continue
        seen.add(key)
        records.append(
            {
                "id": f"{prefix}-{len(records):06d}",
                "messages": messages,
                "category": category,
                "kind": task.kind,
                "meta": meta,
            }
        )
    return records
