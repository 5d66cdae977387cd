"""Choosing the next token from logits: greedy, temperature, top-k, top-p; with the chosen token's log-prob.

The log-prob is taken from `log_softmax(logits / temperature)` *before* top-k / top-p truncation (for
greedy, temperature 1): truncation is a sampling device, while PPO compares the policy's tempered
distribution with the one it recomputes, so the returned numbers stay meaningful whatever the truncation.

Speed notes (64 rows x 4096 tokens, one CPU core): a full sort costs ~19 ms and `multinomial` or
`exponential_` ~6 ms, as much as a whole decode step of a 5M model. So:
- the draw is inverse-CDF sampling: one uniform number per row and a `searchsorted` in the cumulative sum;
- top-p looks for the nucleus in the 64 most likely tokens first and sorts the whole vocabulary only when
  their mass falls short (flat distributions: untrained models, high temperatures); exact either way.
Transformers' semantics are kept: temperature, then top-k, then top-p over the renormalized survivors.
"""

from __future__ import annotations

import torch

from rlhfkit.generation.params import SamplingParams

_FIRST_NUCLEUS_GUESS = 64


def pick_next_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`logits` [rows, vocab] (fp32) -> (token ids [rows], their log-probs [rows])."""
    if params.greedy:
        tokens = logits.argmax(-1)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
        return tokens, logprobs
    # Dividing by 1.0 changes no bit; skipping it saves a pass over [rows, vocab].
    tempered = logits if params.temperature == 1.0 else logits / params.temperature
    logprobs = torch.log_softmax(tempered, dim=-1)
    probs = logprobs.exp()
    candidates, candidate_ids = _candidates(probs, params)
    choice = _draw(candidates, generator)
    tokens = choice if candidate_ids is None else candidate_ids.gather(-1, choice[:, None])[:, 0]
    return tokens, logprobs.gather(-1, tokens[:, None])[:, 0]


def _candidates(probs: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (unnormalized) probabilities to draw from, and their token ids (None: all tokens, in order).

    Tokens cut by top-k / top-p get probability 0."""
    vocab = probs.shape[-1]
    top_k = params.top_k if 0 < params.top_k < vocab else 0
    if not top_k and params.top_p >= 1.0:
        return probs, None
    if top_k:
        top_probs, top_ids = probs.topk(top_k, dim=-1)
        total = top_probs.sum(-1, keepdim=True)
    else:
        # The nucleus usually fits in the few most likely tokens; if any row's does not, sort everything.
        top_probs, top_ids = probs.topk(min(_FIRST_NUCLEUS_GUESS, vocab), dim=-1)
        if not bool((top_probs.sum(-1) >= params.top_p).all()):
            top_probs, top_ids = probs.sort(dim=-1, descending=True)
        total = torch.ones_like(top_probs[:, :1])
    if params.top_p < 1.0:
        # Keep a token while the mass of the more likely tokens before it is below top_p (so the most
        # likely token is always kept). Mass is relative to the top-k survivors, as in transformers.
        mass_before = (top_probs.cumsum(-1) - top_probs) / total
        top_probs = top_probs.masked_fill(mass_before >= params.top_p, 0.0)
    return top_probs, top_ids


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Column index per row, drawn with probability proportional to `weights` (inverse CDF)."""
    cdf = weights.cumsum(-1)
    targets = (
        torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    )
    # right=True: the first column whose cdf exceeds the target, so a zero-weight column is never chosen.
    choice = torch.searchsorted(cdf, targets, right=True)[:, 0]
    # Rounding can put the target at the very top of the cdf; the most likely column stands in then (the
    # argmax, a pass over every row, only in that rare case).
    overflow = choice >= weights.shape[-1]
    if bool(overflow.any()):
        choice = torch.where(overflow, weights.argmax(-1), choice)
    return choice
