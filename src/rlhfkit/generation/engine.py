"""The decode loop: batches of left-padded prompts -> `Completion`s, on the lean or the general decoder.

Design:
- Prompts are sorted by length and cut into chunks of `batch_size`, so each chunk carries little padding;
  results come back in the caller's order.
- A chunk is prefilled once, then decoded one token per live row per step. A row ends at a stop token, a
  stop string or `max_new_tokens`. When at most half of the rows the decoder still carries are live, the
  finished ones are dropped from the KV cache (a copy of the cache, paid at most once per halving), so a
  batch with a few long responses does not pay for the short ones.
- Randomness comes only from one `torch.Generator` seeded from `SamplingParams.seed`.
- Per-token work in Python is one `tolist()` of the chosen tokens and their log-probs per step.
"""

from __future__ import annotations

import random
import sys
import weakref
from collections.abc import Callable, Sequence

import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import lean_llama
from rlhfkit.generation.hf_decoder import HFDecoder
from rlhfkit.generation.int8_linear import int8_usable, require_quantize, warn_if_rows_are_slow
from rlhfkit.generation.params import Completion, SamplingParams
from rlhfkit.generation.sampling import pick_next_tokens
from rlhfkit.generation.stopping import StopStrings

BACKENDS = ("auto", "lean", "hf")
_NOTICED: weakref.WeakSet = weakref.WeakSet()  # models whose fallback to the general decoder was announced


def lean_or_notice(model: torch.nn.Module) -> bool:
    """Whether the lean engine runs `model`; if not, say once per model object (one load) why not."""
    reason = lean_llama.unsupported_reason(model)
    if reason is None:
        return True
    if model not in _NOTICED:
        _NOTICED.add(model)
        print(
            f"generation: general Hugging Face decoder for {type(model).__name__} ({reason}; the fast lean "
            "engine runs Llama-layout float32 models on the CPU)",
            file=sys.stderr,
            flush=True,
        )
    return False


def check_quantize(model: torch.nn.Module, quantize: str, option: str = "quantize") -> None:
    """Refuse a `--quantize` value this model or this torch cannot decode with (`int8_linear`)."""
    require_quantize(quantize, option)
    if quantize == "none":
        return
    reason = lean_llama.unsupported_reason(model)
    if reason is not None:
        raise RlhfkitError(f"{option} {quantize}: decodes with the lean engine only, and {reason}")
    if not int8_usable():
        raise RlhfkitError(
            f"{option} {quantize}: this torch has no CPU int8 weight kernel (_weight_int8pack_mm)"
        )


def check_batch_quantize(model: torch.nn.Module, quantize: str, option: str) -> None:
    """`check_quantize` for a caller that decodes many rows at a time (rollouts, rejection sampling); it also
    says on stderr where int8 is slower than fp32 for such batches."""
    check_quantize(model, quantize, option)
    if quantize != "none":
        warn_if_rows_are_slow(option)


def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams | None = None,
    *,
    pad_token_id: int,
    tokenizer=None,
    batch_size: int = 64,
    backend: str = "auto",
    on_token: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    quantize: str = "none",
) -> list[Completion]:
    """Sample one completion per prompt (token ids in, token ids + log-probs out).

    `tokenizer` (optional) fills `Completion.text` and is required for `params.stop_strings`.
    `backend`: "lean" (fast Llama decoder; error if the model is not a supported Llama), "hf" (the model's
    own forward, any causal LM) or "auto" (lean when supported).
    `on_token(prompt_index, token_id)` is called for every generated token as it comes (streaming);
    `on_chunk(done)` after each chunk with the number of prompts finished so far (progress bars).
    `quantize="int8"`: the lean engine decodes with weight-only int8 copies of the weights (`int8_linear`).
    """
    params = params or SamplingParams()
    if backend not in BACKENDS:
        raise RlhfkitError(f"backend: expected one of {', '.join(BACKENDS)}, got '{backend}'")
    if batch_size < 1:
        raise RlhfkitError(f"batch_size: expected an integer >= 1, got {batch_size}")
    if params.stop_strings and tokenizer is None:
        raise RlhfkitError("stop_strings: a tokenizer is needed to match stop strings")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise RlhfkitError(f"prompt {i}: expected at least one token")
    if backend == "lean" and not lean_llama.supports(model):
        raise RlhfkitError(f"backend 'lean': {type(model).__name__} is not a supported Llama model")
    check_quantize(model, quantize)
    if quantize != "none" and backend == "hf":
        raise RlhfkitError(f"quantize {quantize}: decodes with the lean engine only, not backend 'hf'")
    use_lean = backend == "lean" or (backend == "auto" and lean_or_notice(model))
    device = next(model.parameters()).device
    seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
    generator = torch.Generator(device=device).manual_seed(seed)
    stops = StopStrings(tokenizer, params.stop_strings) if tokenizer is not None else None

    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]), reverse=True)
    results: list[Completion | None] = [None] * len(prompt_ids)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            decoder = lean_llama.LeanLlama(model, len(chunk), quantize) if use_lean else HFDecoder(model)
            chunk_prompts = [list(prompt_ids[i]) for i in chunk]
            stream = None if on_token is None else (lambda row, token, c=chunk: on_token(c[row], token))
            done = _generate_chunk(
                decoder, chunk_prompts, params, pad_token_id, generator, stops, device, stream
            )
            for i, completion in zip(chunk, done):
                results[i] = completion
            if on_chunk is not None:
                on_chunk(start + len(chunk))
    return results  # type: ignore[return-value]


def _generate_chunk(
    decoder,
    prompts: list[list[int]],
    params: SamplingParams,
    pad_token_id: int,
    generator: torch.Generator,
    stops: StopStrings | None,
    device: torch.device,
    on_token: Callable[[int, int], None] | None,
) -> list[Completion]:
    rows = len(prompts)
    width = max(len(p) for p in prompts)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, width), dtype=torch.long)
    for r, ids in enumerate(prompts):
        input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[r, width - len(ids) :] = 1
    logits = decoder.prefill(input_ids.to(device), attention_mask.to(device), params.max_new_tokens)

    stop_ids = set(params.stop_token_ids)
    tokens_out: list[list[int]] = [[] for _ in range(rows)]
    logprobs_out: list[list[float]] = [[] for _ in range(rows)]
    finish: list[str | None] = [None] * rows
    carried = list(range(rows))  # decoder row -> prompt index
    live = rows
    for step in range(params.max_new_tokens):
        tokens, logprobs = pick_next_tokens(logits, params, generator)
        for r, token, logprob in zip(carried, tokens.tolist(), logprobs.tolist()):
            if finish[r] is not None:
                continue
            tokens_out[r].append(token)
            logprobs_out[r].append(logprob)
            if on_token is not None:
                on_token(r, token)
            if token in stop_ids or (stops and stops.hit(tokens_out[r])):
                finish[r] = "stop"
                live -= 1
        if live == 0 or step == params.max_new_tokens - 1:
            break
        if live <= len(carried) // 2:
            keep = [i for i, r in enumerate(carried) if finish[r] is None]
            index = torch.tensor(keep, dtype=torch.long, device=device)
            if decoder.keep(index):
                carried = [carried[i] for i in keep]
                tokens = tokens.index_select(0, index)
        logits = decoder.step(tokens)

    completions = []
    for r in range(rows):
        ids = tokens_out[r]
        reason = finish[r] or "length"
        text = None
        if stops is not None:
            ended_by_token = reason == "stop" and ids[-1] in stop_ids
            text = stops.cut(stops.decode(ids[:-1] if ended_by_token else ids))
        completions.append(
            Completion(ids, logprobs_out[r], reason, text=text, prompt_tokens=len(prompts[r]))  # type: ignore[arg-type]
        )
    return completions
