"""`POST /v1/chat/completions`: the assistant's reply to a conversation, through the model's chat template.

Roles are `system`, `user`, `assistant` and `tool` (`developer`, OpenAI's newer name for system, is read as
`system`); content is a string or a list of text parts. `tools` and `tool_calls`: `serve/tools.py`; `best_of`: `serve/best_of.py`. The reply ends at the end-of-turn token, a stop
string, or `max_completion_tokens` / `max_tokens`.
`logprobs: true` reports each reply token's log-prob under the model's own distribution, with
`top_logprobs` alternatives. Without a `max_tokens` the reply is capped at `Limits.default_chat_max_tokens`
(512 by default) or the room the context leaves, whichever is less, so every chat request ends.
"""

from __future__ import annotations

from contextlib import aclosing
from functools import partial

from fastapi.responses import JSONResponse, StreamingResponse

from rlhfkit.serve.admission import Offload, check_prompt_chars
from rlhfkit.serve.best_of import best_of_for
from rlhfkit.serve.choices import ChoiceBuilder, chat_logprob_entries
from rlhfkit.serve.errors import APIError, bad_request
from rlhfkit.serve.limits import Limits
from rlhfkit.serve.responses import DONE, response_meta, sse, usage_of
from rlhfkit.serve.rows import build_rows, new_builders, run_rows, run_to_end
from rlhfkit.serve.schemas import (
    ROLES,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatLogprobs,
    Delta,
    stop_strings,
)
from rlhfkit.serve.served import ServedModel
from rlhfkit.serve.tools import (
    StreamedReply,
    call_deltas,
    check_template,
    offered_tools,
    split_call,
    tool_message,
)


async def create_chat_completion(
    served: ServedModel, request: ChatCompletionRequest, limits: Limits, offload: Offload
):
    """`offload(fn, *args)` runs the tokenization off the event loop (the app passes its admission queue)."""
    if request.top_logprobs and not request.logprobs:
        raise bad_request(
            "'logprobs' must be set to true if 'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    n = request.n or 1
    sampled = best_of_for(served, request, n)  # > n: best-of-n, the reranker keeps n (`serve/best_of.py`)
    limits.check_request([0], sampled, 0)
    messages = _messages(request)
    offered = offered_tools(request.tools, request.tool_choice)
    if request.tools or any(m["role"] == "tool" or "tool_calls" in m for m in messages):
        check_template(served.tokenizer, served.name)
    # Too long to fit: refused before rendering (the template only adds characters) or tokenizing.
    check_prompt_chars(served, ["".join(m["content"] for m in messages)], sampled, limits, "messages")
    # Rendering and tokenizing a long conversation takes a while: off the event loop.
    prompt_ids = await offload(served.encode_chat, messages)
    room = served.context_length - len(prompt_ids)
    max_tokens = (
        request.max_completion_tokens
        or request.max_tokens
        or max(min(room, limits.default_chat_max_tokens), 1)
    )
    param = "max_completion_tokens" if request.max_completion_tokens else "messages"
    served.check_context(len(prompt_ids), max_tokens, param)
    limits.check_request([len(prompt_ids)], sampled, max_tokens)
    stops = stop_strings(request)
    top_logprobs = request.top_logprobs or 0
    rows = build_rows(
        served,
        [prompt_ids],
        sampled,
        request,
        max_tokens=max_tokens,
        stop_strings=stops,
        top_logprobs=top_logprobs,
    )
    builders = new_builders(served, sampled, stops)
    meta = response_meta("chatcmpl", served, request)
    want_logprobs = bool(request.logprobs)
    usage = partial(usage_of, len(prompt_ids), builders)  # every sampled token, the unpicked ones too

    async def pick() -> list[ChoiceBuilder]:  # best-of-n, once every sample has finished
        replies = [(b.text(), b.finish_reason == "stop") for b in builders]
        # Scoring takes a reward-model forward: off the event loop, like tokenizing.
        return [builders[i] for i in await offload(served.reranker.pick, messages, replies, n)]

    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        usage_chunk = usage if include_usage else None
        if sampled > n:
            events = _stream_picked(served, rows, builders, pick, meta, want_logprobs, usage_chunk, offered)
        else:
            events = _stream(served, rows, builders, meta, want_logprobs, usage_chunk, offered)
        return StreamingResponse(events, media_type="text/event-stream")

    await run_to_end(served, rows, builders)
    picked = await pick() if sampled > n else builders
    choices = []
    for i, b in enumerate(picked):
        content, calls = split_call(b.text(), offered)
        choices.append(
            ChatChoice(
                index=i,
                message=AssistantMessage(content=content, tool_calls=calls),
                logprobs=ChatLogprobs(content=chat_logprob_entries(served.tokenizer, b.reported_events()))
                if want_logprobs
                else None,
                finish_reason="tool_calls" if calls else b.finish_reason or "length",
            )
        )
    return JSONResponse(ChatCompletion(**meta, choices=choices, usage=usage()).model_dump())


def _messages(request: ChatCompletionRequest) -> list[dict]:
    """The conversation as plain `{"role", "content"}` dicts, checked."""
    messages = []
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        if message.role not in ROLES:
            raise bad_request(
                f"Invalid value for 'messages[{i}].role': '{message.role}'. Supported values are: "
                "'system', 'user', 'assistant', 'developer' and 'tool'.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        content = message.content
        extra = message.model_extra or {}
        if role == "tool" or (role == "assistant" and extra.get("tool_calls")):
            text = "".join(p.text or "" for p in content) if isinstance(content, list) else content
            messages.append(tool_message(role, text, extra, i))
            continue
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise bad_request(
                    f"messages[{i}].content: only text parts are supported by this server.",
                    param=f"messages[{i}].content",
                    code="invalid_value",
                )
            content = "".join(part.text for part in content)
        if content is None:
            raise bad_request(
                f"Missing required parameter: 'messages[{i}].content'.", param=f"messages[{i}].content"
            )
        messages.append({"role": role, "content": content})
    return messages


def _chunk(meta: dict, index: int, delta: Delta, logprobs=None, finish_reason=None) -> str:
    choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason)
    body = ChatCompletionChunk(**meta, choices=[choice]).model_dump()
    body["choices"][0]["delta"] = delta.model_dump(exclude_none=True)
    return sse(body)


async def _stream_picked(served, rows, builders, pick, meta, want_logprobs, usage, offered: set[str]):
    """A best-of-n reply, streamed: nothing is known before every sample is scored, so each picked choice
    comes whole, in the chunks a streamed reply is made of (role, content, tool calls, finish)."""
    chunk = partial(_chunk, meta)
    try:
        await run_to_end(served, rows, builders)
        for index, builder in enumerate(await pick()):
            yield chunk(index, Delta(role="assistant", content=""))
            content, calls = split_call(builder.text(), offered)
            logprobs = None
            if want_logprobs:
                logprobs = ChatLogprobs(
                    content=chat_logprob_entries(served.tokenizer, builder.reported_events())
                )
            if content or logprobs:
                yield chunk(index, Delta(content=content or ""), logprobs)
            for piece in call_deltas(calls or []):
                yield chunk(index, Delta(tool_calls=piece))
            yield chunk(index, Delta(), None, "tool_calls" if calls else builder.finish_reason or "length")
        if usage is not None:
            yield sse(ChatCompletionChunk(**meta, choices=[], usage=usage()).model_dump())
        yield DONE
    except Exception as exc:  # the stream has started: report in-band, as OpenAI does
        error = exc if isinstance(exc, APIError) else APIError(500, f"{type(exc).__name__}: {exc}")
        yield sse(error.body())


async def _stream(served, rows, builders, meta, want_logprobs, usage, offered: set[str]):
    """The chunks of a streamed reply; with `offered` tools, a reply that ends in a call streams it as
    `delta.tool_calls` (`serve/tools.py`)."""
    chunk = partial(_chunk, meta)

    replies = [StreamedReply(offered) for _ in builders] if offered else None
    try:
        for i in range(len(builders)):
            yield chunk(i, Delta(role="assistant", content=""))
        async with aclosing(run_rows(served, rows, builders)) as updates:
            async for index, text, finished in updates:
                builder = builders[index]
                logprobs = None
                if want_logprobs:
                    fresh = builder.new_events()
                    if fresh:
                        logprobs = ChatLogprobs(content=chat_logprob_entries(served.tokenizer, fresh))
                calls = None
                if replies is not None:
                    reply = replies[index]
                    text, calls = reply.finish(text) if finished else (reply.add(text), None)
                if text or logprobs:
                    yield chunk(index, Delta(content=text), logprobs)
                for piece in call_deltas(calls or []):
                    yield chunk(index, Delta(tool_calls=piece))
                if finished:
                    yield chunk(index, Delta(), None, "tool_calls" if calls else builder.finish_reason)
        if usage is not None:
            body = ChatCompletionChunk(**meta, choices=[], usage=usage()).model_dump()
            yield sse(body)
        yield DONE
    except Exception as exc:  # the stream has started: report in-band, as OpenAI does
        error = exc if isinstance(exc, APIError) else APIError(500, f"{type(exc).__name__}: {exc}")
        yield sse(error.body())
