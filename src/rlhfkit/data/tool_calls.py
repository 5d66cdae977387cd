"""Tool calls in chats: the OpenAI function-calling format on disk, and the one line of text a model writes.

On disk (the OpenAI / Hugging Face conversational format), an assistant message may carry
`"tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"item": "..."}}}]`
(`arguments` an object, or the JSON text of one as the OpenAI API sends it) and its `content` may be empty or
null; the tool's answer is the next message, `{"role": "tool", "content": "..."}`.

In the model's text, each call is one line after the turn's content, the function-calling JSON
`{"name": "lookup", "arguments": {"item": "Lomar K3 phone"}}` (the tokenizer's chat template writes the same
bytes as `call_text`). A reply whose last line starts with `{` is an attempted call: `parse_tool_call` returns
the call, or a `BadCall` whose message the environment hands back to the model as the tool's output, so a
malformed call is a lesson, never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(frozen=True)
class BadCall:
    """A reply that tried to call a tool and failed to say which, or how: `error` tells the model why."""

    text: str
    error: str


def call_text(call: ToolCall) -> str:
    """The call as the model writes it (and as the chat template renders a message's `tool_calls`)."""
    return json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)


def call_message(call: ToolCall, content: str = "") -> dict:
    """An assistant message that makes `call`, in the OpenAI format."""
    function = {"name": call.name, "arguments": call.arguments}
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"type": "function", "function": function}],
    }


def parse_tool_call(text: str) -> ToolCall | BadCall | None:
    """The call a reply ends with; None for a reply that calls nothing (a final answer)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines or not lines[-1].lstrip().startswith("{"):
        return None
    last = lines[-1].strip()
    try:
        obj = json.loads(last)
    except json.JSONDecodeError as exc:
        return BadCall(last, f"the tool call is not valid JSON ({exc.msg} at character {exc.pos})")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return BadCall(last, 'a tool call needs a "name": {"name": ..., "arguments": {...}}')
    arguments = obj.get("arguments", {})
    if not isinstance(arguments, dict):
        return BadCall(
            last, f'the "arguments" of {obj["name"]} must be an object, got {type(arguments).__name__}'
        )
    return ToolCall(obj["name"], arguments)


def check_tool_calls(msg: dict, path: str | Path, line: int | None, where: str) -> None:
    """Raise unless `msg["tool_calls"]` (if present) is a list of OpenAI function calls; a JSON-text `arguments`
    must hold an object."""
    calls = msg.get("tool_calls")
    if calls is None:
        return
    field = f"{where}.tool_calls"
    if msg.get("role") != "assistant":
        raise RlhfkitError.at(path, line, field, "only assistant messages make tool calls")
    if not isinstance(calls, list):
        raise RlhfkitError.at(path, line, field, f"expected a list of calls, got {type(calls).__name__}")
    for i, call in enumerate(calls):
        here = f"{field}[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise RlhfkitError.at(path, line, here, 'expected {"type": "function", "function": {...}}')
        if call.get("type", "function") != "function":
            raise RlhfkitError.at(path, line, f"{here}.type", f"expected 'function', got {call['type']!r}")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise RlhfkitError.at(path, line, f"{here}.function.name", "expected a non-empty string")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(arguments, dict):
            raise RlhfkitError.at(
                path, line, f"{here}.function.arguments", "expected an object (or the JSON text of one)"
            )


def renders_tool_calls(tokenizer) -> bool:
    """Whether the tokenizer's chat template writes a message's tool calls and a tool turn (templates saved
    before the `tool` role silently drop the calls, which would train on empty turns)."""
    call = ToolCall("lookup", {"item": "probe"})
    messages = [
        {"role": "user", "content": "q"},
        call_message(call),
        {"role": "tool", "content": "tool-probe"},
    ]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template may refuse the tool role with its own error
        return False
    return isinstance(text, str) and call_text(call) in text and "tool-probe" in text


def require_tool_template(tokenizer, source: object) -> None:
    if not renders_tool_calls(tokenizer):
        raise RlhfkitError(
            f"{source}: the chat template does not render tool calls and tool turns; use a tokenizer trained "
            "by this version (`rlhfkit tokenizer train`) or give one with --chat-template FILE"
        )
