"""`POST /v1/completions`: raw text continuation, the way a base model is used.

`prompt` may be a string, a list of strings, a list of token ids or a list of such lists (one choice set per
prompt). `max_tokens` defaults to 16 as in OpenAI's API; `max_tokens=0` with `echo` only scores the prompt.
`echo` puts the prompt in front of the text (and, with `logprobs`, its tokens' log-probs in front of the
generated ones; the first prompt token has none). `logprobs=k` reports each token's log-prob and its k most
likely alternatives under the model's own distribution (temperature 1).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from functools import partial

from fastapi.responses import JSONResponse, StreamingResponse

from rlhfkit.serve.admission import Offload, check_prompt_chars
from rlhfkit.serve.choices import completion_logprobs
from rlhfkit.serve.errors import APIError, bad_request
from rlhfkit.serve.limits import Limits
from rlhfkit.serve.responses import DONE, response_meta, sse, usage_of
from rlhfkit.serve.rows import build_rows, new_builders, run_rows, run_to_end
from rlhfkit.serve.schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    stop_strings,
)
from rlhfkit.serve.served import ServedModel

DEFAULT_MAX_TOKENS = 16


async def create_completion(
    served: ServedModel, request: CompletionRequest, limits: Limits, offload: Offload
):
    """`offload(fn, *args)` runs the tokenization off the event loop (the app passes its admission queue)."""
    n = request.n or 1
    count = len(request.prompt) if isinstance(request.prompt, list) and request.prompt else 1
    if request.prompt and all(isinstance(p, int) for p in request.prompt):
        count = 1  # one prompt given as token ids
    limits.check_request([0] * count, n, 0)  # too many choices: refused before any tokenization
    _check_sizes(served, request.prompt, n, limits)  # too long to fit: refused before any tokenization
    # Tokenizing a long prompt takes a while: on a worker thread, so the event loop keeps serving others.
    prompts, prompt_texts = await offload(_prompts, served, request.prompt)
    echo = bool(request.echo)
    max_tokens = DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
    if max_tokens == 0 and not echo:
        raise bad_request(
            "'max_tokens' must be at least 1 (0 is allowed only with 'echo').",
            param="max_tokens",
            code="invalid_value",
        )
    for ids in prompts:
        served.check_context(len(ids), max_tokens, "prompt")
    limits.check_request([len(ids) for ids in prompts], n, max_tokens)
    stops = stop_strings(request)
    top = request.logprobs
    rows = []
    if max_tokens:
        rows = build_rows(
            served, prompts, n, request, max_tokens=max_tokens, stop_strings=stops, top_logprobs=top or 0
        )
    builders = new_builders(served, len(prompts) * n, stops)
    scored = [None] * len(prompts)
    if echo and top is not None:
        # On the model's worker thread, between decode steps (`BatchWorker.call` says why not another thread).
        scored = [
            await asyncio.wrap_future(served.batcher.call(partial(served.score_prompt, ids, top)))
            for ids in prompts
        ]
    echo_parts = [
        _EchoPart(prompt_texts[i // n] if echo else "", prompts[i // n] if echo else [], scored[i // n])
        for i in range(len(builders))
    ]
    meta = response_meta("cmpl", served, request)
    usage = partial(usage_of, sum(len(ids) for ids in prompts), builders)
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        events = _stream(served, rows, builders, echo_parts, top, meta, usage if include_usage else None)
        return StreamingResponse(events, media_type="text/event-stream")
    if rows:
        await run_to_end(served, rows, builders)
    choices = []
    for i, builder in enumerate(builders):
        part = echo_parts[i]
        logprobs = None
        if top is not None:
            logprobs = CompletionLogprobs(**_logprobs(served, builder, part, top, builder.reported_events()))
        choices.append(
            CompletionChoice(
                index=i,
                text=part.text + builder.text(),
                logprobs=logprobs,
                finish_reason=builder.finish_reason or "length",
            )
        )
    body = Completion(**meta, choices=choices, usage=usage())
    return JSONResponse(body.model_dump())


class _EchoPart:
    """What `echo` puts in front of a choice: the prompt's text, tokens and (with logprobs) their scores."""

    def __init__(self, text: str, token_ids: list[int], scored: tuple | None):
        self.text = text
        self.token_ids = token_ids
        self.logprobs, self.tops = scored if scored else ([], [])


def _logprobs(served: ServedModel, builder, part: _EchoPart, top: int, events, offset: int = 0) -> dict:
    ids = list(part.token_ids) + [e.token_id for e in events]
    logprobs = list(part.logprobs) + [e.logprob for e in events]
    tops = list(part.tops) + [e.top for e in events]
    if not top:
        tops = [None] * len(ids)
    return completion_logprobs(served.tokenizer, ids, logprobs, tops, offset)


async def _stream(served, rows, builders, echo_parts, top, meta, usage):
    def chunk(index: int, text: str, logprobs: dict | None = None, finish_reason: str | None = None) -> str:
        choice = CompletionChoice(
            index=index,
            text=text,
            logprobs=CompletionLogprobs(**logprobs) if logprobs else None,
            finish_reason=finish_reason,
        )
        return sse(Completion(**meta, choices=[choice]).model_dump())

    offsets = [0] * len(builders)
    try:
        for i, part in enumerate(echo_parts):
            if part.text or part.token_ids:
                logprobs = None
                if top is not None:
                    logprobs = _logprobs(served, builders[i], part, top, [])
                yield chunk(i, part.text, logprobs)
                offsets[i] = len(part.text)
        if rows:
            async with aclosing(run_rows(served, rows, builders)) as updates:
                async for index, text, finished in updates:
                    builder = builders[index]
                    logprobs = None
                    if top is not None:
                        fresh = builder.new_events()
                        if fresh:
                            empty = _EchoPart("", [], None)
                            logprobs = _logprobs(served, builder, empty, top, fresh, offsets[index])
                            offsets[index] = logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
                    if text or logprobs or finished:
                        yield chunk(index, text, logprobs, builder.finish_reason if finished else None)
        else:
            for i in range(len(builders)):
                yield chunk(i, "", None, "length")
        if usage is not None:
            yield sse({**Completion(**meta, choices=[]).model_dump(), "usage": usage().model_dump()})
        yield DONE
    except Exception as exc:  # the stream has started: report in-band, as OpenAI does
        error = exc if isinstance(exc, APIError) else APIError(500, f"{type(exc).__name__}: {exc}")
        yield sse(error.body())


def _check_sizes(served: ServedModel, prompt, n: int, limits: Limits) -> None:
    """Refuse prompts too long for the context from their length alone (characters, or token ids)."""
    prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
    check_prompt_chars(served, [p for p in prompts if isinstance(p, str)], n, limits, "prompt")
    for p in prompts:
        if isinstance(p, list) and len(p) > served.context_length:
            served.check_context(len(p), 0, "prompt")


def _prompts(served: ServedModel, prompt) -> tuple[list[list[int]], list[str]]:
    """Token ids and display text of each prompt, whatever form `prompt` took."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise bad_request("'prompt' must not be an empty list.", param="prompt", code="invalid_value")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    ids_list, texts = [], []
    vocab = served.model.get_input_embeddings().weight.shape[0]
    for p in prompt:
        if isinstance(p, str):
            ids_list.append(served.encode_text(p))
            texts.append(p)
            continue
        if not p:
            raise bad_request("A token-id prompt must not be empty.", param="prompt", code="invalid_value")
        bad = [t for t in p if not 0 <= t < vocab]
        if bad:
            raise bad_request(
                f"Token id {bad[0]} is out of the vocabulary (0..{vocab - 1}).",
                param="prompt",
                code="invalid_value",
            )
        ids_list.append(list(p))
        texts.append(served.tokenizer.decode(p, skip_special_tokens=False))
    return ids_list, texts
