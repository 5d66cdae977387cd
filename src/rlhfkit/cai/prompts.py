"""The exact words of every CAI request: critique, revision and the labeler's multiple-choice question.

One module writes them so that the demonstrations a small model learns from (`world_data`) and the requests
it later receives (`revise`, `label`) are the same text, token for token.

Design: each request is a single user turn that *quotes* the conversation as a transcript
("User: ... / Assistant: ..."), rather than continuing the conversation as further turns (Bai et al.'s
layout). Two reasons. SFT trains on every assistant turn of a chat, so a critique demonstration laid out as
turns would also teach the flawed response under critique; quoted in a user turn, it is context only. And each
request stays self-contained and bounded: a revision quotes only the latest response and its critique, not
the whole chain, so N revisions never outgrow a small model's window.
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_A = "(A)"
ANSWER_B = "(B)"
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def transcript(messages: Sequence[dict]) -> str:
    """`System: ...` / `User: ...` / `Assistant: ...`, one line (or block) per message."""
    return "\n".join(f"{ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages)


def critique_prompt(prompt: Sequence[dict], response: str, critique_request: str) -> str:
    """Ask for a critique of `response` (the assistant's reply to `prompt`) under one principle."""
    convo = transcript([*prompt, {"role": "assistant", "content": response}])
    return f"Here is a conversation:\n{convo}\n\nCritique request: {critique_request}"


def revision_prompt(prompt: Sequence[dict], response: str, critique: str, revision_request: str) -> str:
    """Ask for a rewrite of `response` given its `critique`; the reply is the new response alone."""
    convo = transcript([*prompt, {"role": "assistant", "content": response}])
    return f"Here is a conversation:\n{convo}\n\nCritique: {critique}\n\nRevision request: {revision_request}"


def comparison_prompt(prompt: Sequence[dict], question: str, response_a: str, response_b: str) -> str:
    """The labeler's multiple-choice question; the expected reply is `(A)` or `(B)`."""
    return (
        f"Consider this conversation:\n{transcript(prompt)}\n\n{question}\n"
        f"{ANSWER_A} {response_a}\n{ANSWER_B} {response_b}\nAnswer with {ANSWER_A} or {ANSWER_B}."
    )


def parse_choice(text: str) -> str | None:
    """'A' or 'B' for a reply that picks an option (`(A)`, `A`, ` (B) because ...`), else None."""
    s = text.strip()
    if s.startswith("("):
        s = s[1:].lstrip()
    if s[:1] in ("A", "B") and (len(s) == 1 or not s[1].isalnum()):
        return s[0]
    return None
