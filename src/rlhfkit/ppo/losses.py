"""The PPO losses, readable top to bottom. All tensors are `[batch, response_len]` with a 0/1 `mask`
marking real response tokens; every mean is over the masked tokens of the minibatch (token-level).

Policy (clipped surrogate, Schulman et al. 2017). With ratio r = pi(a|s) / pi_old(a|s) = exp(logp - logp_old)
and advantage A:

    L_pg = mean( max( -A * r, -A * clip(r, 1 - eps, 1 + eps) ) )

The max of the two negated terms is the pessimistic bound: once the ratio has moved more than eps in the
direction the advantage favours, the gradient through that token vanishes. `clip_frac` is the share of
tokens where the clipped term is the active one.

Value (clipped like PPO2 / lm-human-preferences): the new value may move at most eps_v from the value at
rollout time before the clipped branch takes over,

    v_clip = v_old + clip(v - v_old, -eps_v, eps_v)
    L_vf = 0.5 * mean( max( (v - R)^2, (v_clip - R)^2 ) )

Monitoring: entropy H = logsumexp(z) - sum softmax(z) * z of the logits z, and the approximate KL between
the old and the new policy on the sampled tokens, k3 = (r - 1) - log r (Schulman's "Approximating KL
divergence": unbiased, always >= 0, low variance). A large value means the policy moved far in one rollout's
epochs: the trainer stops the epoch early.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss and its statistics (clip fraction, approximate KL, mean ratio)."""
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss and its statistics (share of clipped tokens)."""
    values_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        stats = {"value_clip_frac": masked_mean((loss_clipped > loss_unclipped).float(), mask)}
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis: logsumexp(z) - sum p * z."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)
