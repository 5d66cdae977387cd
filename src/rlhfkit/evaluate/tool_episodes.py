"""`evaluate --max-tool-turns N`: each response is a whole tool-using episode, played like a rollout's.

The model may call the demo world's tools (`world.tools`: `lookup`, `calculator`) up to N times; the
environment runs each call and appends its result as a tool turn (`ppo.environment.run_episodes`, the same
step PPO, RLOO and GRPO train with, so what is evaluated is what was optimized). The judge and the verifier
read the final assistant turn. Each episode is returned as a `Completion` of that final turn's text whose
`meta` holds the calls and results before it (`turns`) and whose token count is what the policy wrote.

`tool_stats` sums the episodes up: calls per episode and the share of calls that ran (a call with malformed
JSON, an unknown tool, missing arguments or an item the world does not know comes back as an error).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace

from rlhfkit.generation import Completion, SamplingParams, generate
from rlhfkit.generation.turns import render_chat


def play_episodes(
    model,
    tokenizer,
    chats: Sequence[Sequence[dict]],
    params: SamplingParams,
    max_tool_turns: int,
    batch_size: int,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Completion]:
    """One tool-using episode per chat, as the `Completion` of its final turn (see the module docstring). The
    tokenizer's template must render tool turns (`data.tool_calls.require_tool_template`)."""
    from rlhfkit.generation import end_of_turn_ids
    from rlhfkit.ppo.environment import run_episodes
    from rlhfkit.world.tools import WORLD_TOOLS

    stop_ids = tuple(dict.fromkeys((*params.stop_token_ids, *end_of_turn_ids(tokenizer, model))))
    prompt_ids = [tokenizer(render_chat(tokenizer, c), add_special_tokens=False)["input_ids"] for c in chats]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def sample(contexts: list[list[int]], turn_params: SamplingParams) -> list[Completion]:
        return generate(
            model, contexts, turn_params, pad_token_id=pad, tokenizer=tokenizer, batch_size=batch_size
        )

    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    params = replace(params, stop_token_ids=stop_ids)
    episodes = run_episodes(sample, tokenizer, prompt_ids, params, WORLD_TOOLS, max_tool_turns, limit)
    if on_chunk:
        on_chunk(len(episodes))
    return [
        Completion(
            token_ids=[t for t, s in zip(e.response, e.sampled) if s],
            logprobs=[],
            finish_reason="stop" if e.finished else "length",
            text=e.text,
            meta={"turns": e.turns},
        )
        for e in episodes
    ]


def call_ran(tool_output: str) -> bool:
    """Whether a tool turn holds a result rather than the environment's `{"error": ...}`."""
    try:
        value = json.loads(tool_output)
    except ValueError:
        return True  # tools answer in JSON; anything else was not an error object
    return not (isinstance(value, dict) and "error" in value)


def tool_stats(turns: Sequence[Sequence[dict]]) -> dict:
    """`tool_calls_per_episode` and `valid_call_share` (None without calls) over episodes' `turns`."""
    outputs = [m["content"] for episode in turns for m in episode if m["role"] == "tool"]
    return {
        "tool_calls_per_episode": len(outputs) / max(len(turns), 1),
        "valid_call_share": sum(map(call_ran, outputs)) / len(outputs) if outputs else None,
    }
