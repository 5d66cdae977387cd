"""(prompt, response) items from any record that holds responses: what a reward model scores.

Chats whose last message is the assistant's and prompt/completion records give one response ("reward");
candidates and rankings (`completions`) give K ("rewards", one per completion); pairs give two
("reward_chosen", "reward_rejected"). The key names are where `rlhfkit reward score` writes the scores.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.data.chats import check_messages
from rlhfkit.errors import RlhfkitError

Item = tuple[list[dict], list[dict]]


def record_responses(record: dict, path: str | Path, line: int) -> tuple[list[Item], list[str]]:
    """The record's (prompt, response) items and, for each, the key its score belongs under."""
    if "completions" in record:
        prompt = check_messages(record.get("prompt"), path, line, "prompt")
        completions = record["completions"]
        if not isinstance(completions, list) or not completions:
            raise RlhfkitError.at(path, line, "completions", "expected a non-empty list of completions")
        items = [
            (prompt, check_messages(c, path, line, f"completions[{i}]")) for i, c in enumerate(completions)
        ]
        return items, ["rewards"] * len(items)
    if "chosen" in record:
        prompt = check_messages(record.get("prompt"), path, line, "prompt")
        items = [(prompt, check_messages(record.get(k), path, line, k)) for k in ("chosen", "rejected")]
        return items, ["reward_chosen", "reward_rejected"]
    if "completion" in record:
        prompt = check_messages(record.get("prompt"), path, line, "prompt")
        return [(prompt, check_messages(record["completion"], path, line, "completion"))], ["reward"]
    if "messages" in record:
        msgs = check_messages(record["messages"], path, line, "messages")
        if msgs[-1]["role"] != "assistant":
            raise RlhfkitError.at(
                path, line, "messages", "expected the last message to be the assistant's response"
            )
        return [(msgs[:-1], msgs[-1:])], ["reward"]
    raise RlhfkitError.at(
        path, line, None, "expected 'messages', 'prompt'+'completion', 'completions' or 'chosen'/'rejected'"
    )
