"""The process term of `--reward verifier+process[=W]`: how many of a task's steps an episode's tool calls did.

A verifiable task of the demo world carries the `steps` that reach its answer (`world/verifiable.py`): look-ups
in the knowledge base, then arithmetic or comparisons. The world can check a tool-using episode against them
step by step, without a learned model:

- a `lookup` step is done when one of the episode's tool turns returned that entity's fact (the tool ran
  without error on the right item, so the argument was the right one);
- an arithmetic task's result step (its last `add`/`sub`/`mul`) is done when a calculator turn returned the
  task's answer (the right number was computed, whatever the final sentence then says).

Comparisons and counts are done in the model's head and have no tool step to check. The term is the share of
checkable steps done, in 0..1; repeating a call earns nothing more. It rewards a right look-up even when the
final answer is wrong, which is what an outcome-only reward cannot do, and also what a policy can exploit:
calls that are right, and a final sentence that is not (the outcome term stays the judge of that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

ARITHMETIC = ("add", "sub", "mul")


def _facts(turns: Sequence[dict]) -> tuple[set[tuple[str, int]], set[float]]:
    """(entity name, value) pairs the episode's look-ups returned, and the calculator's results."""
    facts: set[tuple[str, int]] = set()
    results: set[float] = set()
    for message in turns:
        if message.get("role") != "tool":
            continue
        try:
            value = json.loads(message.get("content") or "")
        except ValueError:
            continue
        if not isinstance(value, dict) or "error" in value:
            continue
        if "result" in value and isinstance(value["result"], int | float):
            results.add(float(value["result"]))
        elif isinstance(value.get("item"), str):
            facts |= {
                (value["item"].lower(), v) for k, v in value.items() if k != "item" and isinstance(v, int)
            }
    return facts, results


def checkable_steps(steps: Sequence[dict]) -> list[dict]:
    """The steps a tool turn can show: every look-up, and the last arithmetic step (the task's result)."""
    lookups = [s for s in steps if s.get("op") == "lookup"]
    arithmetic = [s for s in steps if s.get("op") in ARITHMETIC]
    return lookups + arithmetic[-1:]


def process_score(steps: Sequence[dict], turns: Sequence[dict]) -> float:
    """The share of a task's checkable steps that an episode's tool turns did (0 when it has none)."""
    wanted = checkable_steps(steps)
    if not wanted:
        return 0.0
    facts, results = _facts(turns)
    done = 0
    for s in wanted:
        if s["op"] == "lookup":
            done += (str(s.get("of", "")).lower(), s.get("value")) in facts
        else:
            done += float(s.get("value", float("nan"))) in results
    return done / len(wanted)
