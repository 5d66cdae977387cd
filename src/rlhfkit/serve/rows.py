"""From a validated request to the rows the batcher runs, and the event loop that fills the choices.

Seeds: choice `j` of a prompt is sampled with `seed + j`, so `n=1` with seed `s` gives exactly what the
generation engine gives for that prompt with `SamplingParams(seed=s)`, and a list of prompts gives the
same choices as one request per prompt. Without a seed every choice draws a fresh one.

`top_p=0` (allowed by OpenAI) means "only the most likely token": it becomes `top_k=1`.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import aclosing

from rlhfkit.generation import SamplingParams
from rlhfkit.serve.batching import DoneEvent, JobStream, Row, TokenEvent
from rlhfkit.serve.choices import ChoiceBuilder
from rlhfkit.serve.schemas import ChatCompletionRequest, CompletionRequest
from rlhfkit.serve.served import ServedModel

SEED_SPACE = 2**63


def build_rows(
    served: ServedModel,
    prompts: list[list[int]],
    n: int,
    request: CompletionRequest | ChatCompletionRequest,
    *,
    max_tokens: int,
    stop_strings: tuple[str, ...],
    top_logprobs: int,
) -> list[Row]:
    """Rows in OpenAI's choice order: prompt 0 choices 0..n-1, prompt 1 choices 0..n-1, ...; each samples with
    the request's temperature, top_p, top_k and seed."""
    temperature, seed = request.temperature, request.seed
    top_p = 1.0 if request.top_p is None else request.top_p
    top_k = request.top_k or 0
    if top_p == 0:
        top_p, top_k = 1.0, 1
    rows = []
    for ids in prompts:
        for j in range(n):
            row_seed = (
                random.SystemRandom().randrange(SEED_SPACE) if seed is None else (seed + j) % SEED_SPACE
            )
            params = SamplingParams(
                max_new_tokens=max_tokens,
                temperature=1.0 if temperature is None else temperature,
                top_k=top_k,
                top_p=top_p,
                stop_token_ids=served.stop_token_ids,
                stop_strings=stop_strings,
                seed=row_seed,
            )
            rows.append(Row(list(ids), params, top_logprobs))
    return rows


def new_builders(served: ServedModel, count: int, stop_strings: tuple[str, ...]) -> list[ChoiceBuilder]:
    return [ChoiceBuilder(served.tokenizer, stop_strings, served.stop_token_ids) for _ in range(count)]


async def run_rows(
    served: ServedModel,
    rows: list[Row],
    builders: list[ChoiceBuilder],
) -> AsyncIterator[tuple[int, str, bool]]:
    """Run the rows; yield (choice index, new final text, finished) as tokens arrive."""
    stream = JobStream(served.batcher, rows)
    try:
        async for event in stream.events():
            builder = builders[event.row]
            if isinstance(event, TokenEvent):
                text = builder.add(event)
                yield event.row, text, False
            elif isinstance(event, DoneEvent):
                yield event.row, builder.finish(event.finish_reason), True
    finally:
        stream.cancel()


async def run_to_end(served: ServedModel, rows: list[Row], builders: list[ChoiceBuilder]) -> None:
    """Run the rows until every choice has finished (a response that does not stream)."""
    async with aclosing(run_rows(served, rows, builders)) as updates:
        async for _ in updates:
            pass
