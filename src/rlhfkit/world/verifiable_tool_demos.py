"""SFT demonstrations that solve the verifiable tasks with the world's tools (`world build --verifiable N --tools`).

A demonstration is a multi-turn chat: the question, then one tool call per assistant turn (a `lookup` for each
fact the task's `steps` read, then one `calculator` call: the arithmetic of `price_total` and the year gaps,
`min(...)`/`max(...)` of the prices compared, the sum of `(price < limit)` for a count), each followed by the
tool's real output (`world.tools.run_tool`), and a final answer in the format of the plain demonstrations
(`verifiable_demos`) that copies the calculator's result as it came ("So the answer is $1097.", not "$1,097";
a comparison names the option whose looked-up price the result is). Every step that needs more than copying
a number is the calculator's, so what the model must learn is to copy the right names and numbers.

Some demonstrations carry documented mistakes, at the rates in `VERIFIABLE_TOOL_FLAWS`, named in `quality`:
- `wrong_lookup`: one lookup asks for another item of the same pool (a product of the same category) and the
  demonstration uses its value as if it were the one asked for, through to a (usually) wrong answer;
- `no_calculator`: the lookups, then the arithmetic done by hand in the final turn, with one slip carried to
  the answer (`verifiable_demos._slip`), as a hurried person does (totals and gaps only: comparisons have no
  arithmetic to slip).
Both are what RL with the verifier has to fix: look up the right item, use the calculator.
"""

from __future__ import annotations

import json
import math
import random
from functools import partial

from rlhfkit.data.tool_calls import ToolCall, call_message
from rlhfkit.world.knowledge import PRACTICE_CATALOGUES, KnowledgeBase, load_knowledge, practice_knowledge
from rlhfkit.world.tools import LOOKUP_FIELDS, WORLD_TOOLS, lookup, run_tool
from rlhfkit.world.verifiable_demos import demonstrations, final_sentence, worked_answer

# (flaw, probability); the rest use the right lookups and the calculator
VERIFIABLE_TOOL_FLAWS: list[tuple[str, float]] = [("wrong_lookup", 0.1), ("no_calculator", 0.1)]


def _counts(steps: list[dict]) -> list[int]:
    """How many of each looked-up product a price_total task buys (a lookup followed by its `mul`, else 1)."""
    counts = []
    for i, step in enumerate(steps):
        if step["op"] == "lookup":
            after = steps[i + 1] if i + 1 < len(steps) else {}
            counts.append(after["args"][0] if after.get("op") == "mul" else 1)
    return counts


def _expression(meta: dict, values: list[int]) -> str:
    """The calculator's expression over the looked-up values: the arithmetic of a total or a gap, the min or
    max of a comparison, the sum of comparisons of a count."""
    kind = meta["kind"]
    if kind == "price_total":
        return " + ".join(f"{c} * {v}" if c > 1 else str(v) for c, v in zip(_counts(meta["steps"]), values))
    if kind in ("born_gap", "founded_gap"):
        return f"{values[1]} - {values[0]}"
    if kind == "cheapest":
        return f"{meta['steps'][len(values)]['op']}({', '.join(map(str, values))})"
    limit = next(s for s in meta["steps"] if s["op"] == "lt")["args"][1]
    return " + ".join(f"({v} < {limit})" for v in values)


def _answer(meta: dict, values: list[int], computed):
    """The answer that follows from the looked-up `values` and the calculator's result: for a comparison, the
    option whose looked-up value it is."""
    if meta["kind"] == "cheapest":
        return meta["choices"][values.index(computed)]
    return computed


def _final_text(meta: dict, answer) -> str:
    if meta["kind"] == "price_total":
        # the calculator's number as it wrote it ("$2214", not "$2,214"): a copy of the tool turn's tokens,
        # where reformatting it made a tiny model write other digits ($2,416 after a result of 2214)
        return f"So the answer is ${answer}."
    return final_sentence(meta, answer)


def _wrong_item(meta: dict, name: str, rng: random.Random, kb: KnowledgeBase) -> str:
    """Another entity of `name`'s pool (a product of the same category) that the task does not ask about."""
    asked = {s["of"] for s in meta["steps"] if s["op"] == "lookup"}
    for pool, field in LOOKUP_FIELDS.items():
        entity = kb.find(pool, name)
        if entity is not None:
            same = [
                e["name"]
                for e in kb.pools[pool]
                if e["name"] not in asked and e.get(field) and e.get("category") == entity.get("category")
            ]
            return rng.choice(sorted(same))
    raise KeyError(name)  # cannot happen: every lookup step names a world entity


def tool_chat(
    question: str, meta: dict, rng: random.Random, flaw: str | None = None, kb: KnowledgeBase | None = None
) -> list[dict]:
    """The demonstration's messages for a task's `meta`, with `flaw` if any; `kb`: the knowledge base the task
    was drawn from and the tools read (default: the world's)."""
    kb = kb or load_knowledge()
    tools = {**WORLD_TOOLS, "lookup": partial(lookup, kb=kb)}
    messages: list[dict] = [{"role": "user", "content": question}]

    def call(name: str, arguments: dict) -> dict:
        messages.append(call_message(ToolCall(name, arguments)))
        messages.append({"role": "tool", "content": run_tool(ToolCall(name, arguments), tools)})
        return json.loads(messages[-1]["content"])

    items = [s["of"] for s in meta["steps"] if s["op"] == "lookup"]
    wrong_at = rng.randrange(len(items)) if flaw == "wrong_lookup" else None
    values = []
    for i, item in enumerate(items):
        asked = _wrong_item(meta, item, rng, kb) if i == wrong_at else item
        result = call("lookup", {"item": asked})
        values.append(next(v for k, v in result.items() if k != "item"))
    if flaw == "no_calculator":
        messages.append({"role": "assistant", "content": worked_answer(meta, rng, "arithmetic_slip")})
        return messages
    computed = call("calculator", {"expr": _expression(meta, values)})["result"]
    messages.append({"role": "assistant", "content": _final_text(meta, _answer(meta, values, computed))})
    return messages


def verifiable_tool_demonstrations(
    n: int, rng: random.Random, prefix: str, practice: float = 0.0
) -> list[dict]:
    """`n` tool-using SFT chats over the train templates and entities, kinds in turn; `quality` names the flaw.
    A `practice` share of them (spread evenly: chat i is one when floor(i * practice) steps up there) asks about
    a made-up catalogue's products and towns instead of the world's, so that copying the asked name is the only
    way to the right lookup; their `meta` says `practice: true` (the held-out questions stay the world's)."""

    def knowledge_of(i: int) -> KnowledgeBase | None:
        before = math.floor(i * practice)  # when chat i is a practice one: its place among them (0-based)
        if before == math.floor((i - 1) * practice):
            return None
        return practice_knowledge(1 + before % PRACTICE_CATALOGUES)

    return demonstrations(
        n,
        rng,
        prefix,
        VERIFIABLE_TOOL_FLAWS,
        "no_calculator",
        lambda task, flaw, knowledge: tool_chat(task.question, task.meta, rng, flaw, knowledge),
        knowledge_of,
    )
