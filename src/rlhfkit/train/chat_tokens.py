"""Turn chats into token ids and a loss mask that covers assistant tokens only.

The mask is found by rendering growing prefixes of the chat with the tokenizer's own chat template: the
tokens between "everything before this assistant turn, plus the generation prompt" and "everything up to and
including this assistant turn" are that turn's content and its end-of-turn token. This works for any
Hugging Face tokenizer whose template renders prefixes consistently; one that does not gets a clear error.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.data.tool_calls import require_tool_template
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.turns import guard_messages

IGNORE = -100


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """The token ids of a chat rendered with the tokenizer's template (opened for a reply if asked); special
    tokens typed in its messages stay text (`generation.turns.guard_messages`)."""
    text = tokenizer.apply_chat_template(
        guard_messages(tokenizer, messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_chat(
    tokenizer, messages: list[dict], max_len: int, where: str = ""
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels = IGNORE everywhere except assistant turns (content + end of turn).

    Chats longer than `max_len` are cut from the right (the trailing part of a long answer is lost, which
    only shortens that example).
    """
    if tokenizer.chat_template is None:
        raise RlhfkitError(f"{where}: the tokenizer has no chat template; SFT needs one to render chats")
    full = chat_ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE] * len(full)
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start = len(chat_ids(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        upto = chat_ids(tokenizer, messages[: i + 1], add_generation_prompt=False)
        end = len(upto)
        if upto != full[:end]:
            raise RlhfkitError(
                f"{where}: the chat template does not render prefixes consistently; cannot mask turns"
            )
        labels[start:end] = full[start:end]
    return full[:max_len], labels[:max_len]


def tokenize_chats(
    tokenizer, chats: list[dict], max_len: int, source: str | Path = ""
) -> list[tuple[list[int], list[int]]]:
    """Tokenize every chat; drop those whose assistant tokens were all cut off by `max_len` (and say how many)."""
    if any(m.get("tool_calls") or m["role"] == "tool" for chat in chats for m in chat["messages"]):
        require_tool_template(tokenizer, source or "the chats")  # an old template would drop the calls
    out, dropped = [], 0
    for n, chat in enumerate(chats, 1):
        ids, labels = tokenize_chat(tokenizer, chat["messages"], max_len, where=f"{source}:{n}")
        if all(lab == IGNORE for lab in labels[1:]):
            dropped += 1
            continue
        out.append((ids, labels))
    if dropped:
        print(f"sft: {dropped} chat(s) in {source} have no assistant tokens within {max_len} tokens; skipped")
    if not out:
        raise RlhfkitError(f"{source}: no chat has assistant tokens to learn from within --max-len {max_len}")
    return out
