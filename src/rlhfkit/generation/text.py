"""Text in, text out: `generate_text` for plain completion and `generate_chat` for chats.

`generate_chat` renders each chat with the tokenizer's chat template and the generation prompt (for
rlhfkit tokenizers: `<|role|>content<|end|>` per message, then `<|assistant|>`), and always stops at the
model's end of turn (`turns.end_of_turn_ids`: the template's end-of-turn token, eos, the generation config's
eos ids), in addition to any stops in the params.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from rlhfkit.generation.engine import generate
from rlhfkit.generation.params import Completion, SamplingParams
from rlhfkit.generation.turns import end_of_turn_ids, render_chat

__all__ = ["end_of_turn_ids", "generate_chat", "generate_text", "pad_id", "render_chat"]


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, else its eos id, else 0 (padding is masked, so any id works)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def generate_text(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    params: SamplingParams | None = None,
    **options,
) -> list[Completion]:
    """Continue each text prompt (special tokens such as bos are added as the tokenizer does by default).
    `options`: `generate`'s batch_size, backend, on_token, on_chunk and quantize."""
    prompt_ids = [tokenizer(text)["input_ids"] for text in prompts]
    return generate(model, prompt_ids, params, pad_token_id=pad_id(tokenizer), tokenizer=tokenizer, **options)


def generate_chat(
    model: torch.nn.Module,
    tokenizer,
    chats: Sequence[Sequence[dict]],
    params: SamplingParams | None = None,
    **options,
) -> list[Completion]:
    """The assistant's next reply to each chat (a list of `{"role", "content"}` messages); `options` as above."""
    params = params or SamplingParams()
    stop_ids = tuple(dict.fromkeys((*params.stop_token_ids, *end_of_turn_ids(tokenizer, model))))
    params = replace(params, stop_token_ids=stop_ids)
    prompt_ids = [
        tokenizer(render_chat(tokenizer, chat), add_special_tokens=False)["input_ids"] for chat in chats
    ]
    return generate(model, prompt_ids, params, pad_token_id=pad_id(tokenizer), tokenizer=tokenizer, **options)
