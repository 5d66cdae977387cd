"""What a process reward model (PRM) judges: the steps of a tool-using episode, their labels and their text.

A step is one assistant turn that called a tool, together with the tool's answer (`ppo.environment.Episode.turns`
holds them as pairs: `{"role": "assistant", "content", "call"}` then `{"role": "tool", "content"}`). The final
turn, the answer, is not a step: the verifier judges it.

The demo world labels each step from the task's known solution (`meta.steps`, `world/verifiable.py`), the same
facts `ppo.process_reward` checks, but per call rather than per task:
- a `lookup` is right when it returned the fact of an entity the task needs (the tool ran, on the right item)
  and that entity was not looked up before in the episode;
- a `calculator` call is right when it returned a number the solution computes (any of its arithmetic or
  comparison steps' numbers, or the numeric answer) that no earlier call returned;
- anything else is wrong: an error, a tool the world does not have, an item or number the task does not need,
  a repeat.

So a learned PRM (`prm.train`) can be trained where these labels exist and used where they do not (prompts
without `meta.steps`, or another world), which is the point of learning one (Lightman et al. 2023: "Let's verify
step by step"; Uesato et al. 2022).

The text a PRM reads for step i is the conversation up to and including that step's tool answer, one line per
turn ("User: ...", "Assistant: <call JSON>", "Tool: <result JSON>"): plain text, so any backbone reads the same
thing, encoder or decoder, with or without a chat template.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rlhfkit.reward.model import ROLE_NAMES


def _json(text: str):
    try:
        return json.loads(text or "")
    except ValueError:
        return None


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def step_pairs(turns: Sequence[dict]) -> list[tuple[dict, dict]]:
    """The (assistant call, tool answer) pairs of an episode's turns, in order."""
    pairs = []
    for i, message in enumerate(turns):
        if message.get("role") == "assistant" and i + 1 < len(turns) and turns[i + 1].get("role") == "tool":
            pairs.append((message, turns[i + 1]))
    return pairs


def step_labels(task_steps: Sequence[dict], answer, turns: Sequence[dict]) -> list[int]:
    """1 or 0 for each tool call of an episode (see the module docstring), from the task's solution steps."""
    needed = {str(s.get("of", "")).lower() for s in task_steps if s.get("op") == "lookup"}
    numbers = {_number(s.get("value")) for s in task_steps if s.get("op") != "lookup"}
    numbers.add(_number(answer))
    numbers.discard(None)
    looked_up: set[str] = set()
    computed: set[float] = set()
    labels = []
    for _call, tool in step_pairs(turns):
        value = _json(tool.get("content", ""))
        right = False
        if isinstance(value, dict) and "error" not in value:
            item = value.get("item")
            result = _number(value.get("result"))
            if isinstance(item, str):
                right = item.lower() in needed and item.lower() not in looked_up
                looked_up.add(item.lower())
            elif result is not None:
                right = result in numbers and result not in computed
                computed.add(result)
        labels.append(int(right))
    return labels


def _line(message: dict) -> str:
    role = ROLE_NAMES.get(message.get("role", ""), str(message.get("role", "")).title())
    content = str(message.get("content") or "").strip()
    call = str(message.get("call") or "").strip()
    if call:  # an episode's turn ends with its call line as sampled, and `call` is that call: write it once
        content = content.rpartition("\n")[0].strip()
    return f"{role}: " + "\n".join(p for p in (content, call) if p)


def step_texts(prompt: Sequence[dict], turns: Sequence[dict]) -> list[str]:
    """The text the PRM reads for each step: the prompt and the turns up to that step's tool answer."""
    head = [_line(m) for m in prompt]
    texts, lines = [], []
    for message in turns:
        lines.append(_line(message))
        if message.get("role") == "tool":
            texts.append("\n".join(head + lines))
    return texts
