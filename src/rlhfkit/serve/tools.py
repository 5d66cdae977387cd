"""OpenAI function calling in `POST /v1/chat/completions`: `tools` in, `tool_calls` out.

A request may send `tools` (`[{"type": "function", "function": {"name": ..., ...}}]`), assistant messages
with `tool_calls` and `tool` messages with a tool's result; the model's chat template renders them as it did in
training (`tokenizer.CHAT_TEMPLATE`: each call one `{"name": ..., "arguments": {...}}` line after the turn's
text, a result a `tool` turn). The tool definitions themselves are not shown to the model: a demo-world model
knows `lookup` and `calculator` from its SFT data (`world build --verifiable N --tools`).

When the request offers tools and the reply's last line is a call to one of them (`data.tool_calls.
parse_tool_call`), the choice carries it as `message.tool_calls` (arguments as JSON text, as OpenAI sends them),
the text before it as `content` (null when empty), and `finish_reason` "tool_calls"; the client runs the tool
and sends the result back as a `tool` message. A reply that names no offered tool, or is not a valid call, is
plain content.

Streaming (`stream: true`) sends what OpenAI sends: content deltas, then for a call one `delta.tool_calls` piece
with its index, id, type and name (arguments ""), one with its arguments, and `finish_reason` "tool_calls".
A call is only known once the reply has ended (it must be the last line), so while tools are offered the
stream holds back the reply's trailing whitespace and a last line that starts with `{` (`StreamedReply`);
everything before goes out as it is sampled, and a held line that turns out not to be a call goes out as
content at the end.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rlhfkit.data.tool_calls import ToolCall, check_tool_calls, parse_tool_call, require_tool_template
from rlhfkit.errors import RlhfkitError
from rlhfkit.serve.errors import bad_request


def offered_tools(tools: list[Any] | None, tool_choice: Any) -> set[str]:
    """The names of the functions a request offers (empty: none, or `tool_choice` "none"); 400 on a malformed
    entry or a `tool_choice` this server cannot honour (it cannot force a call)."""
    if tool_choice not in (None, "auto", "none"):
        raise bad_request(
            "'tool_choice' supports only 'auto' and 'none' on this server (rlhfkit serve): the model decides.",
            param="tool_choice",
            code="invalid_value",
        )
    names = set()
    for i, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(name, str)
        ):
            raise bad_request(
                f'Invalid value for \'tools[{i}]\': expected {{"type": "function", "function": {{"name": ...}}}}.',
                param=f"tools[{i}]",
                code="invalid_value",
            )
        names.add(name)
    return set() if tool_choice == "none" else names


def tool_message(role: str, content: str | None, extra: dict, index: int) -> dict:
    """A request's assistant message with `tool_calls`, or a `tool` message, as the chat template reads it."""
    where = f"messages[{index}]"
    if role == "tool":
        if content is None:
            raise bad_request(f"Missing required parameter: '{where}.content'.", param=f"{where}.content")
        return {"role": "tool", "content": content}
    calls = extra.get("tool_calls")
    try:  # the chat files' own check of OpenAI tool calls (a name; arguments an object or its JSON text)
        check_tool_calls({"role": "assistant", "tool_calls": calls}, "request", None, where)
    except RlhfkitError as exc:
        raise bad_request(str(exc), param=f"{where}.tool_calls", code="invalid_value") from None
    out = []
    for call in calls:
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        # As objects, so the template writes each call exactly as the training chats' calls are written.
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        out.append({"type": "function", "function": {"name": name, "arguments": arguments}})
    return {"role": "assistant", "content": content or "", "tool_calls": out}


def check_template(tokenizer, model_name: str) -> None:
    """400 unless the model's chat template renders tool calls and tool turns."""
    try:
        require_tool_template(tokenizer, f"model '{model_name}'")
    except RlhfkitError as exc:
        raise bad_request(str(exc), param="messages") from None


def split_call(text: str, offered: set[str]) -> tuple[str | None, list[dict] | None]:
    """(content, tool_calls) of a reply: its last line as an OpenAI tool call when it calls an offered tool."""
    call = parse_tool_call(text) if offered else None
    if not isinstance(call, ToolCall) or call.name not in offered:
        return text, None
    content = "\n".join(text.rstrip().splitlines()[:-1]).strip() or None
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }
    ]
    return content, calls


def content_ready(text: str) -> int:
    """How many characters of a reply sampled so far are content whatever comes next: all but its trailing
    whitespace and, when its last line starts with `{`, that line (it may be the call the reply ends with)."""
    core = text.rstrip()
    lines = core.splitlines(keepends=True)  # the line breaks `parse_tool_call` splits on
    if lines and lines[-1].lstrip().startswith("{"):
        return len("".join(lines[:-1]).rstrip())
    return len(core)


class StreamedReply:
    """One streamed choice when tools are offered: content goes out as soon as it cannot belong to a call;
    `finish` says what the held end was. The content deltas join to the text before the call line (trailing
    whitespace removed), or to the whole reply when it makes no call."""

    def __init__(self, offered: set[str]):
        self.offered, self.text, self.sent = offered, "", 0

    def add(self, piece: str) -> str:
        """The content to send now, `piece` appended."""
        self.text += piece
        ready = content_ready(self.text)
        out = self.text[self.sent : ready] if ready > self.sent else ""
        self.sent = max(self.sent, ready)
        return out

    def finish(self, piece: str) -> tuple[str, list[dict] | None]:
        """(the content still to send, the OpenAI tool calls or None) once the reply has ended with `piece`."""
        self.text += piece
        _, calls = split_call(self.text, self.offered)
        end = content_ready(self.text) if calls else len(self.text)
        return self.text[self.sent : end], calls


def call_deltas(calls: list[dict]) -> list[list[dict]]:
    """The `delta.tool_calls` of the chunks that stream `calls`: each call's id, type and name with empty
    arguments, then its arguments (what OpenAI's first and following pieces of a call hold)."""
    out = []
    for i, call in enumerate(calls):
        function = call["function"]
        named = {"name": function["name"], "arguments": ""}
        out.append([{"index": i, "id": call["id"], "type": "function", "function": named}])
        out.append([{"index": i, "function": {"arguments": function["arguments"]}}])
    return out
