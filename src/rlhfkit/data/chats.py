"""Chat records: `{"messages": [{"role": ..., "content": ...}, ...], "id": ..., "category": ..., ...}`.

The OpenAI / TRL conversational format, with tool use as OpenAI writes it: an assistant message may carry
`tool_calls` (its `content` then may be null: read as ""), and a `tool` message holds a tool's result
(`data.tool_calls`). Validation names the file, line and the exact field
(`messages[2].role`) with what was expected, so a user can fix a file of thousands of lines quickly.
Free metadata is kept untouched; only the fields rlhfkit reads are checked.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.data.sources import RecordSource, record_source
from rlhfkit.data.tool_calls import check_tool_calls
from rlhfkit.errors import RlhfkitError

ROLES = ("system", "user", "assistant", "tool")


def check_messages(
    messages: object,
    path: str | Path,
    line: int | None,
    field: str,
    roles: tuple[str, ...] = ROLES,
    allow_empty: bool = False,
) -> list[dict]:
    """Return `messages` if it is a list of `{"role", "content": str}` with roles in `roles`, else raise."""
    if not isinstance(messages, list):
        raise RlhfkitError.at(
            path, line, field, f"expected a list of messages, got {type(messages).__name__}"
        )
    if not messages and not allow_empty:
        raise RlhfkitError.at(path, line, field, "expected a non-empty list of messages")
    for i, msg in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise RlhfkitError.at(
                path, line, where, f"expected an object with 'role' and 'content', got {type(msg).__name__}"
            )
        role = msg.get("role")
        if role not in roles:
            raise RlhfkitError.at(
                path, line, f"{where}.role", f"expected one of {', '.join(roles)}, got {role!r}"
            )
        check_tool_calls(msg, path, line, where)
        if msg.get("content") is None and msg.get("tool_calls"):
            msg["content"] = ""  # OpenAI's null content beside tool calls: every reader expects a string
        if not isinstance(msg.get("content"), str):
            got = type(msg.get("content")).__name__ if "content" in msg else "nothing"
            raise RlhfkitError.at(path, line, f"{where}.content", f"expected a string, got {got}")
    return messages


def check_optional_str(record: dict, key: str, path: str | Path, line: int | None) -> None:
    if key in record and not isinstance(record[key], str):
        raise RlhfkitError.at(path, line, key, f"expected a string, got {type(record[key]).__name__}")


def check_chat(record: dict, path: str | Path, line: int | None, require_assistant: bool = False) -> dict:
    """Validate one chat record in place and return it."""
    messages = check_messages(record.get("messages"), path, line, "messages")
    if require_assistant and not any(m["role"] == "assistant" for m in messages):
        raise RlhfkitError.at(path, line, "messages", "expected at least one assistant message to learn from")
    for key in ("id", "category"):
        check_optional_str(record, key, path, line)
    return record


def load_chats(path: str | Path | RecordSource, require_assistant: bool = False) -> list[dict]:
    """Read and validate chat records from a source (`data.sources`: JSONL, .jsonl.gz, Parquet, a `datasets`
    folder or Hub dataset); raise `RlhfkitError.at(source, line, field, ...)` on the first bad record.

    `require_assistant=True` (SFT data) also demands an assistant turn in every chat; prompts leave it off.
    """
    src = record_source(path)
    src.require_columns(("messages",))
    chats = [check_chat(rec, src, lineno, require_assistant) for lineno, rec in src]
    if not chats:
        raise RlhfkitError(f"{src}: no chat records (empty file)")
    return chats


def load_prompts(path: str | Path | RecordSource) -> list[dict]:
    """Prompt records: chats whose final assistant turn, if any, is dropped ("a prompt is a chat without the
    final assistant turn"). What remains must end with a user turn; anything else names the line and field.
    Every stage that samples from prompts (generate, ppo and the other methods, evaluate, cai) reads them here."""
    src = record_source(path)
    src.require_columns(("messages",))
    out = []
    for lineno, rec in src:
        messages = list(check_chat(rec, src, lineno)["messages"])
        if messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages or messages[-1]["role"] != "user":
            where = f"messages[{len(messages) - 1}].role" if messages else "messages"
            raise RlhfkitError.at(
                src, lineno, where, "expected a prompt that ends with a user turn (before the final reply)"
            )
        out.append({**rec, "messages": messages})
    if not out:
        raise RlhfkitError(f"{src}: no prompt records (empty file)")
    return out
