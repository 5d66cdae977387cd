"""Text in, text out: `generate_text` for plain completion and `generate_chat` for chats.

`generate_chat` renders each chat with the tokenizer's chat template and the generation prompt (for
rlhfkit tokenizers: `<|role|>content<|end|>` per message, then `<|assistant|>`), and always stops at the
end-of-turn token `<|end|>` and the tokenizer's eos, in addition to any stops in the params.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from rlhfkit.generation.engine import generate
from rlhfkit.generation.params import Completion, SamplingParams

END_OF_TURN = "<|end|>"


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, else its eos id, else 0 (padding is masked, so any id works)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def end_of_turn_ids(tokenizer) -> tuple[int, ...]:
    """Token ids that end an assistant turn: `<|end|>` when the vocabulary has it, and eos."""
    ids = []
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end is not None and end != tokenizer.unk_token_id:
        ids.append(int(end))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(dict.fromkeys(ids))


def render_chat(tokenizer, messages: Sequence[dict]) -> str:
    """A chat as the model sees it, opened for the assistant's reply."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def generate_text(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    params: SamplingParams | None = None,
    *,
    batch_size: int = 64,
    backend: str = "auto",
    on_token: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Continue each text prompt (special tokens such as bos are added as the tokenizer does by default)."""
    prompt_ids = [tokenizer(text)["input_ids"] for text in prompts]
    return generate(
        model,
        prompt_ids,
        params,
        pad_token_id=pad_id(tokenizer),
        tokenizer=tokenizer,
        batch_size=batch_size,
        backend=backend,
        on_token=on_token,
        on_chunk=on_chunk,
    )


def generate_chat(
    model: torch.nn.Module,
    tokenizer,
    chats: Sequence[Sequence[dict]],
    params: SamplingParams | None = None,
    *,
    batch_size: int = 64,
    backend: str = "auto",
    on_token: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Completion]:
    """The assistant's next reply to each chat (a list of `{"role", "content"}` messages)."""
    params = params or SamplingParams()
    stop_ids = tuple(dict.fromkeys((*params.stop_token_ids, *end_of_turn_ids(tokenizer))))
    params = replace(params, stop_token_ids=stop_ids)
    prompt_ids = [
        tokenizer(render_chat(tokenizer, chat), add_special_tokens=False)["input_ids"] for chat in chats
    ]
    return generate(
        model,
        prompt_ids,
        params,
        pad_token_id=pad_id(tokenizer),
        tokenizer=tokenizer,
        batch_size=batch_size,
        backend=backend,
        on_token=on_token,
        on_chunk=on_chunk,
    )
