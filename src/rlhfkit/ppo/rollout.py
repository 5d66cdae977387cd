"""One PPO rollout: sample, score, and measure everything the update needs, with as few forwards as possible.

Steps (each timed, so the trainer can report where the time goes):

1. Generation: the project's engine (`rlhfkit.generation.generate`; the lean KV-cached decoder for Llama
   models) samples one response per prompt, stopping at end of turn or `max_new_tokens`. With tools
   (`--max-tool-turns`), an episode is several turns: `ppo/environment.py` runs the model's tool calls and
   appends their results between turns.
2. Scoring: the reward function reads (prompt messages, response text, response token ids). For a reward
   model folder it renders the chat with the RM tokenizer's template, exactly as the RM was trained, and
   reads the score of the last token (`rlhfkit.reward.model`). Tests pass any Python callable.
3. Forwards: one batched no-grad forward each for the policy's log-probs at rollout time ("old" log-probs),
   the frozen reference's log-probs and the critic's values.

Layout: each episode is one row `prompt + response`, right-padded. Causal attention never lets a real token
see padding that comes after it, so no attention mask is built, positions are the natural 0..n, and the
same row serves the policy, the reference and the critic. Response token j of row i sits at position
`p_i + j` (p_i = prompt length); the state that chose it is the hidden state at `p_i + j - 1`. `mask` is 1 on
the response tokens the policy sampled; tool turns inside a response are 0 there (they condition the tokens
after them but are no action), and a row's response runs to its last 1 (`response_extent`), always a sampled
token. Only the sampled positions go through the LM head (the costliest matmul of a small model) and through the value head, where
that is exact (`train.logits.plain_lm_head`); other architectures use the logits of their own forward.

With LoRA the reference is the policy itself with its adapters disabled (`ref=None`): one copy of the base.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from rlhfkit.generation import SamplingParams, generate
from rlhfkit.lora import is_peft
from rlhfkit.ppo.chosen_logprobs import chosen_logprobs
from rlhfkit.ppo.environment import Tools, run_episodes
from rlhfkit.train.fast_linear import linear
from rlhfkit.train.lean_forward import lean_hidden_at, lean_supported
from rlhfkit.train.logits import body_of, causal_lm_of, logits_at, plain_lm_head

# reward_fn(prompts, response_texts, response_token_ids) -> one float per episode; one whose `reads_turns`
# attribute is true also gets `turns=` (each episode's tool calls and results, `ppo.environment.Episode.turns`)
RewardFn = Callable[[list[list[dict]], list[str], list[list[int]]], Sequence[float]]


@dataclass
class Rollout:
    """A batch of episodes; all tensors share the batch axis and live on the training device."""

    sequences: torch.Tensor  # [B, L] prompt + response, right-padded
    prompt_lens: torch.Tensor  # [B]
    response_ids: torch.Tensor  # [B, R] response tokens (pad past the end)
    mask: torch.Tensor  # [B, R] float, 1 on response tokens the policy sampled (0 on tool turns and padding)
    finished: torch.Tensor  # [B] bool: ended with an end-of-turn token
    raw_scores: torch.Tensor  # [B] reward function output
    texts: list[str]
    prompt_index: list[int]  # index of each episode's prompt in the prompt list
    logprobs: torch.Tensor | None = None  # [B, R] policy at rollout time ("old")
    ref_logprobs: torch.Tensor | None = None  # [B, R] frozen reference
    values: torch.Tensor | None = None  # [B, R] critic at rollout time
    timings: dict[str, float] = field(default_factory=dict)
    turns: list[list[dict]] | None = (
        None  # with tools: each episode's calls and results before its final text
    )

    @property
    def size(self) -> int:
        return self.sequences.size(0)

    @property
    def lengths(self) -> torch.Tensor:
        """[B] tokens per episode (prompt + response, tool turns included): the width its row needs."""
        return self.prompt_lens + response_extent(self.mask)

    def rows(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tensors of rows `idx`, trimmed to the longest sequence / response among them."""
        lengths = response_extent(self.mask[idx])
        width_r = max(int(lengths.max()), 1)
        width = int((self.prompt_lens[idx] + lengths).max())
        return {
            "sequences": self.sequences[idx, :width],
            "prompt_lens": self.prompt_lens[idx],
            "response_ids": self.response_ids[idx, :width_r],
            "mask": self.mask[idx, :width_r],
        }


def response_extent(mask: torch.Tensor) -> torch.Tensor:
    """[B] response length of each row: up to its last sampled token (tool turns before it included)."""
    positions = torch.arange(1, mask.size(-1) + 1, device=mask.device)
    return (
        (positions * (mask > 0)).amax(-1).long() if mask.size(-1) else mask.new_zeros(mask.shape[:-1]).long()
    )


def pad_episodes(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    device,
    sampled: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sequences [B, L], prompt_lens [B], response_ids [B, R], mask [B, R]) for right-padded episodes.
    `sampled`: per response token, 1 if the policy sampled it (default: every token)."""
    batch = len(prompts)
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    width_r = max(max(len(r) for r in responses), 1)
    sequences = torch.full((batch, width), pad_id, dtype=torch.long)
    response_ids = torch.full((batch, width_r), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width_r))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        sequences[i, : len(p) + len(r)] = torch.tensor(list(p) + list(r), dtype=torch.long)
        response_ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1.0 if sampled is None else torch.tensor(list(sampled[i]), dtype=mask.dtype)
    lens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    return sequences.to(device), lens.to(device), response_ids.to(device), mask.to(device)


def response_states(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, L] bool: the positions whose states chose the real response tokens (p_i - 1 + j, j < length_i).
    Row-major order of its True entries is that of `batch["mask"]`: j grows with the position."""
    sequences, prompt_lens, mask = batch["sequences"], batch["prompt_lens"], batch["mask"].bool()
    index = prompt_lens[:, None] - 1 + torch.arange(mask.size(1), device=sequences.device)[None]
    rows = torch.arange(sequences.size(0), device=sequences.device)[:, None].expand_as(index)
    select = torch.zeros(sequences.shape, dtype=torch.bool, device=sequences.device)
    select[rows[mask], index[mask]] = True
    return select


def state_hidden(body: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden states [B, R, H] of the states that chose each response token (positions p_i - 1 + j).

    Llama-layout bodies go through the lean training forward (`train.lean_forward`: only the tokens and
    positions needed, no padding in the matmuls); there the states past a row's response are zeros."""
    sequences, prompt_lens, mask = batch["sequences"], batch["prompt_lens"], batch["mask"]
    if lean_supported(body):
        chosen = lean_hidden_at(body, sequences, response_states(batch))
        return chosen.new_zeros((*mask.shape, chosen.size(-1))).masked_scatter(mask.bool()[..., None], chosen)
    hidden = body(input_ids=sequences, use_cache=False).last_hidden_state
    index = (prompt_lens[:, None] - 1 + torch.arange(mask.size(1), device=sequences.device)[None]).clamp(
        max=sequences.size(1) - 1
    )
    rows = torch.arange(sequences.size(0), device=sequences.device)[:, None]
    return hidden[rows, index]


def token_logprobs(
    policy: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(log-probs [B, R], entropy [B, R] or None, state hidden [B, R, H]) of the response tokens.

    The LM head runs only on real response positions. Logits are divided by the sampling temperature, so
    the log-probs are those of the distribution the responses were sampled from. Entropy is for monitoring
    unless `entropy_grad` (an entropy bonus): then it keeps its graph.
    """
    mask = batch["mask"].bool()
    if plain_lm_head(policy):
        hidden = state_hidden(body_of(policy), batch)
        head = causal_lm_of(policy).lm_head
        with torch.autocast(hidden.device.type, enabled=False):  # the head stays fp32 under a bf16 autocast
            logits = linear(hidden[mask], head.weight, head.bias).float()  # fp32 out of a frozen bf16 head
    else:
        logits, hidden = _own_logits(policy, batch, mask)
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    targets = batch["response_ids"][mask]
    entropy = None
    if entropy_grad and torch.is_grad_enabled():  # an entropy bonus: entropy keeps its graph
        lse = torch.logsumexp(logits, dim=-1)
        flat_logp = logits.gather(1, targets[:, None])[:, 0] - lse
        flat_entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    else:
        flat_logp, flat_entropy = chosen_logprobs(logits, targets)
    logp = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device).masked_scatter(mask, flat_logp)
    if with_entropy:
        entropy = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device).masked_scatter(
            mask, flat_entropy
        )
    return logp, entropy, hidden


def _own_logits(policy, batch: dict[str, torch.Tensor], mask: torch.Tensor):
    """(logits [N, V] at the states choosing the N real response tokens, states [B, R, H]) from the model's
    own forward: for architectures whose logits are more than `lm_head(hidden)`."""
    sequences = batch["sequences"]
    select = response_states(batch)
    logits, chosen = logits_at(policy, sequences, select, with_hidden=True)
    hidden = chosen.new_zeros((*mask.shape, chosen.size(-1))).masked_scatter(mask[..., None], chosen)
    return logits.float(), hidden


def critic_values(
    critic: torch.nn.Module, head: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Values [B, R] of the states before each response token, from a separate critic's backbone + head."""
    hidden = state_hidden(body_of(critic), batch)
    with torch.autocast(hidden.device.type, enabled=False):
        return head(hidden.float())[..., 0].float() * batch["mask"]


def sample_responses(
    policy: torch.nn.Module,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    pad_id: int,
    batch_size: int,
    quantize: str = "none",
):
    """Completions from the generation engine, with the policy in eval mode (then back to train).

    A LoRA policy samples through its own forward: the lean Llama decoder reads base weights only.
    `quantize="int8"`: the lean decoder samples through int8 copies of the policy's current weights (the
    policy is trained, so they are made afresh for each call); the samples then come from a policy a
    rounding away from the one trained, whose log-probs (`measure`) are still the exact ones."""
    was_training = policy.training
    policy.eval()
    try:
        return generate(
            causal_lm_of(policy),
            prompt_ids,
            params,
            pad_token_id=pad_id,
            tokenizer=tokenizer,
            batch_size=batch_size,
            backend="hf" if is_peft(policy) else "auto",
            quantize=quantize,
        )
    finally:
        policy.train(was_training)


def collect(
    policy: torch.nn.Module,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    prompt_messages: Sequence[list[dict]],
    prompt_index: list[int],
    reward_fn: RewardFn,
    params: SamplingParams,
    *,
    pad_id: int,
    device,
    generation_batch_size: int = 64,
    tools: Tools | None = None,
    max_tool_turns: int = 0,
    quantize: str = "none",
) -> Rollout:
    """Generate and score one rollout batch (the forwards are `measure`'s job). With `tools` and
    `max_tool_turns` > 0 each episode may call tools between turns (`ppo.environment`); the reward reads its
    final turn. `quantize`: `sample_responses`'."""
    t0 = time.perf_counter()

    def sample(contexts: list[list[int]], turn_params: SamplingParams):
        return sample_responses(
            policy, tokenizer, contexts, turn_params, pad_id, generation_batch_size, quantize
        )

    if tools and max_tool_turns > 0:
        limit = getattr(causal_lm_of(policy).config, "max_position_embeddings", None) or 10**9
        episodes = run_episodes(sample, tokenizer, prompt_ids, params, tools, max_tool_turns, limit)
        responses, sampled = [e.response for e in episodes], [e.sampled for e in episodes]
        texts, finished, turns = (
            [e.text for e in episodes],
            [e.finished for e in episodes],
            [e.turns for e in episodes],
        )
    else:
        completions = sample([list(p) for p in prompt_ids], params)
        responses, sampled, turns = [c.token_ids for c in completions], None, None
        texts, finished = (
            [c.text or "" for c in completions],
            [c.finish_reason == "stop" for c in completions],
        )
    t1 = time.perf_counter()
    # a process reward (`verifier+process`) also reads each episode's tool calls and results
    extra = {"turns": turns or [[] for _ in texts]} if getattr(reward_fn, "reads_turns", False) else {}
    raw = reward_fn([list(m) for m in prompt_messages], texts, [list(r) for r in responses], **extra)
    t2 = time.perf_counter()
    sequences, prompt_lens, response_ids, mask = pad_episodes(prompt_ids, responses, pad_id, device, sampled)
    return Rollout(
        sequences=sequences,
        prompt_lens=prompt_lens,
        response_ids=response_ids,
        mask=mask,
        finished=torch.tensor(finished, dtype=torch.bool, device=device),
        raw_scores=torch.tensor([float(x) for x in raw], dtype=torch.float32, device=device),
        texts=texts,
        prompt_index=list(prompt_index),
        timings={"generation": t1 - t0, "scoring": t2 - t1},
        turns=turns,
    )


@torch.no_grad()
def measure(
    rollout: Rollout,
    policy: torch.nn.Module,
    ref: torch.nn.Module | None,
    value_fn: Callable[[dict, torch.Tensor], torch.Tensor] | None,
    temperature: float,
    chunk: int = 64,
    amp: Callable[[], AbstractContextManager] = nullcontext,
) -> None:
    """Fill old log-probs, reference log-probs and values: batched forwards over chunks of `chunk` rows, longest first.

    `ref` None: the reference is the (LoRA) policy with its adapters disabled. `value_fn(batch, policy_hidden)`
    returns values (None: no value model, values stay 0); a value head on the policy reuses `policy_hidden`
    (no extra forward), a separate critic runs its own. `amp()`: the mixed-precision context of the training
    forwards (e.g. a bf16 autocast), used here too so that the policy ratio starts at 1 up to rounding.
    """
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    shape = rollout.mask.shape
    device = rollout.mask.device
    out = {name: torch.zeros(shape, device=device) for name in ("logprobs", "ref_logprobs", "values")}
    # Longest first, in chunks of neighbours: each chunk is padded only to its own longest episode.
    order = torch.sort(rollout.lengths, descending=True, stable=True).indices
    for idx in order.split(chunk):
        batch = rollout.rows(idx)
        width = batch["mask"].size(1)
        with amp():
            logp, _, hidden = token_logprobs(policy, batch, temperature)
            ref_logp = reference_logprobs(ref, policy, batch, temperature)
            value = value_fn(batch, hidden) if value_fn is not None else torch.zeros_like(logp)
        for name, part in (("logprobs", logp), ("ref_logprobs", ref_logp), ("values", value)):
            out[name][idx, :width] = part.float()
    policy.train(was_training)
    rollout.logprobs, rollout.ref_logprobs, rollout.values = (
        out["logprobs"],
        out["ref_logprobs"],
        out["values"],
    )
    rollout.timings["forwards"] = time.perf_counter() - t0


def reference_logprobs(ref, policy, batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """The frozen reference's log-probs: a separate model, or (`ref` None) the LoRA policy's base, i.e. the
    same weights with the adapters disabled (as TRL does: no second copy of the model)."""
    if ref is None:
        with policy.disable_adapter():
            return token_logprobs(policy, batch, temperature)[0]
    return token_logprobs(ref, batch, temperature)[0]
