"""SFT demonstrations for the verifiable tasks: worked answers written from each task's `steps`.

A demonstration states each step on its way ("3 × $349 = $1,047.") and ends with one answer sentence
("So the answer is $1,165."), the format `verifier.verify` reads best. Like the world's other
demonstrations, some are not perfect, at the documented rates in `VERIFIABLE_FLAWS`: `direct` gives the
answer without the steps (right, but nothing to learn the arithmetic from), `arithmetic_slip` gets one
arithmetic step wrong and carries the error to the final answer, as a hurried person does. The slips are what
RL with the verifier has to fix.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rlhfkit.world.knowledge import KnowledgeBase
from rlhfkit.world.verifiable import CATEGORY, VERIFIABLE_KINDS, VerifiableTask, sample_verifiable
from rlhfkit.world.wording import PLURAL_PRODUCTS

# (flaw, probability); the rest are worked, correct demonstrations
VERIFIABLE_FLAWS: list[tuple[str, float]] = [("direct", 0.2), ("arithmetic_slip", 0.1)]
ARITHMETIC = ("mul", "add", "sub")


OPS = {"mul": lambda x, y: x * y, "add": lambda x, y: x + y, "sub": lambda x, y: x - y}


def _step_sentence(kind: str, step: dict) -> str | None:
    op = step["op"]
    if op == "lookup":
        if step["field"] == "price":
            verb = "cost" if step["of"].endswith(PLURAL_PRODUCTS) else "costs"
            return f"The {step['of']} {verb} ${step['value']:,}."
        verb = "was born" if step["field"] == "born" else "was founded"
        return f"{step['of']} {verb} in {step['value']}."
    if op == "mul":  # count x price
        return f"{step['args'][0]} × ${step['args'][1]:,} = ${step['value']:,}."
    if op == "add":  # prices
        return f"${step['args'][0]:,} + ${step['args'][1]:,} = ${step['value']:,}."
    if op == "sub":  # years
        return f"{step['args'][0]} - {step['args'][1]} = {step['value']}."
    return None  # comparisons are summed up in the closing sentences


def final_sentence(meta: dict, answer) -> str:
    kind = meta["kind"]
    if kind == "cheapest":
        return f"So the {answer} is the {meta['answer_cues'][0]}."
    if kind == "price_total":
        return f"So the answer is ${answer:,}."
    if kind in ("born_gap", "founded_gap"):
        return f"So the answer is {answer} years."
    return f"So the answer is {answer}."


def _slip(steps: list[dict], rng: random.Random) -> tuple[list[dict], int]:
    """Steps with one arithmetic result off by a plausible slip, carried through the steps that use it;
    (steps, final value)."""
    out = [dict(s, args=list(s.get("args", []))) for s in steps]
    at = rng.choice([i for i, s in enumerate(out) if s["op"] in ARITHMETIC])
    old = out[at]["value"]
    out[at]["value"] += rng.choice([e for e in (-100, -10, -1, 1, 10, 100) if old + e > 0])
    new = out[at]["value"]
    for s in out[at + 1 :]:
        if s["op"] in ARITHMETIC and old in s["args"]:
            s["args"][s["args"].index(old)] = new
            old, s["value"] = s["value"], OPS[s["op"]](*s["args"])
            new = s["value"]
    return out, [s["value"] for s in out if s["op"] in ARITHMETIC][-1]


def worked_answer(meta: dict, rng: random.Random, flaw: str | None = None) -> str:
    """The demonstration's reply for a task's `meta` (its steps and answer), with `flaw` if any."""
    steps, answer = meta["steps"], meta["answer"]
    if flaw == "arithmetic_slip" and any(s["op"] in ARITHMETIC for s in steps):
        steps, answer = _slip(steps, rng)
    final = final_sentence(meta, answer)
    if flaw == "direct":
        return final[3:4].upper() + final[4:]  # "The answer is $1,165."
    sentences = [s for s in (_step_sentence(meta["kind"], step) for step in steps) if s]
    if meta["kind"] == "count_below":
        lookups = [s for s in steps if s["op"] == "lookup"]
        tests = [s for s in steps if s["op"] == "lt"]
        below = [f"the {look['of']}" for look, test in zip(lookups, tests) if test["value"]]
        limit = tests[0]["args"][1]
        sentences.append(f"Under ${limit:,}: " + (", ".join(below) if below else "none of them") + ".")
    return " ".join([*sentences, final])


def pick_flaw(rng: random.Random, flaws: list[tuple[str, float]] = VERIFIABLE_FLAWS) -> str | None:
    r = rng.random()
    for flaw, p in flaws:
        if r < p:
            return flaw
        r -= p
    return None


def demonstrations(
    n: int,
    rng: random.Random,
    prefix: str,
    flaws: list[tuple[str, float]],
    arithmetic_flaw: str,
    messages_of: Callable[[VerifiableTask, str | None, KnowledgeBase | None], list[dict]],
    knowledge_of: Callable[[int], KnowledgeBase | None] = lambda i: None,
) -> list[dict]:
    """`n` SFT chats over the train templates and entities, kinds in turn; `quality` names the flaw, drawn from
    `flaws` ((flaw, probability) pairs); `arithmetic_flaw` needs arithmetic, which a comparison task does not
    have. `knowledge_of(i)` is the knowledge base chat i draws its entities from (None: the world's; another
    one marks the chat's meta `practice`), and `messages_of(task, flaw, knowledge)` writes each chat."""
    kinds = list(VERIFIABLE_KINDS)
    out = []
    for i in range(n):
        knowledge = knowledge_of(i)
        task = sample_verifiable(kinds[i % len(kinds)], rng, "train", knowledge)
        if knowledge is not None:
            task.meta["practice"] = True
        flaw = pick_flaw(rng, flaws)
        if flaw == arithmetic_flaw and not any(s["op"] in ARITHMETIC for s in task.meta["steps"]):
            flaw = None
        out.append(
            {
                "id": f"{prefix}-{i:06d}",
                "messages": messages_of(task, flaw, knowledge),
                "category": CATEGORY,
                "kind": task.kind,
                "meta": task.meta,
                "quality": flaw or "good",
            }
        )
    return out


def verifiable_demonstrations(n: int, rng: random.Random, prefix: str) -> list[dict]:
    """`n` SFT chats that work the answer out in words; some with a documented flaw (`VERIFIABLE_FLAWS`)."""

    def messages(task: VerifiableTask, flaw: str | None, knowledge: KnowledgeBase | None) -> list[dict]:
        reply = worked_answer(task.meta, rng, flaw)
        return [{"role": "user", "content": task.question}, {"role": "assistant", "content": reply}]

    return demonstrations(n, rng, prefix, VERIFIABLE_FLAWS, "arithmetic_slip", messages)
