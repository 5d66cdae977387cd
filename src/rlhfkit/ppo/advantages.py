"""From a scored rollout to per-token advantages and returns.

Per-token reward (Ziegler et al. 2019; InstructGPT). The policy is a token-level agent; each response token
t pays a KL penalty to the frozen reference, and the reward model's score arrives on the last token:

    r_t = -beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))   +   [t == last] * score

Summed over a response, the penalty is -beta times a one-sample estimate of KL(pi || pi_ref) for that
response (the "k1" estimator), so maximizing the return maximizes score - beta * KL.

Generalized advantage estimation (Schulman et al. 2016), with V(s_T) = 0 after the last token:

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lambda * A_{t+1}
    R_t     = A_t + V(s_t)                       (the value target)

Rewards and values are zeroed past each response's end, so the recursion needs no per-row bookkeeping:
every delta after the end is 0 and the last real token sees V = 0 after it. In a tool-using episode the mask
has holes (tool turns: tokens the policy did not choose); t + 1 above is the next *sampled* token, so GAE runs
on each row's sampled tokens packed to the left and the result goes back to their places: the turn that made
a call bootstraps from the value after the tool's answer, not from a zero.

Whitening (masked over all response tokens of the rollout batch) makes the advantages mean 0 / std 1, so
the learning rate means the same thing whatever the reward scale; TRL and lm-human-preferences do the same.

Critic-free baselines (k responses to each prompt, rows grouped prompt by prompt: [P * k]). Instead of a
learned value, the other responses to the same prompt say what "as good as usual" is:

- RLOO (Kool et al. 2019; Ahmadian et al. 2024): with R_i the sequence return (score minus beta times the
  response's KL), A_i = R_i - mean_{j != i} R_j. The baseline leaves the sample itself out, so it stays
  unbiased; every token of response i gets A_i.
- GRPO (Shao et al. 2024, DeepSeekMath): A_i = (R_i - mean_j R_j) / (std_j R_j + eps) over the group; the KL
  to the reference goes into the loss instead of the reward (`kl_loss`).
"""

from __future__ import annotations

import torch

from rlhfkit.ppo.losses import masked_mean, masked_var


def per_token_rewards(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(`rewards` [B, T], per-token `kl` [B, T]); `scores` [B] lands on each row's last sampled token."""
    kl = (logp - ref_logp) * mask
    rewards = -beta * kl
    positions = torch.arange(1, mask.size(-1) + 1, device=mask.device)
    lengths = (positions * (mask > 0)).amax(-1).long()  # up to the last sampled token (`response_extent`)
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last] += scores * (lengths > 0)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both [B, T], zero past each response's end and on tokens outside the mask."""
    # Sampled tokens first, in order (a stable sort): the identity when the mask has no holes.
    packed = torch.sort((mask <= 0).to(torch.int8), dim=-1, stable=True).indices
    mask = mask.gather(-1, packed)
    rewards = rewards.gather(-1, packed) * mask
    values = values.gather(-1, packed) * mask
    steps = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    returns = advantages + values
    unpack = torch.zeros_like(advantages)
    return unpack.scatter(-1, packed, advantages * mask), unpack.scatter(-1, packed, returns * mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over masked entries (the mean is kept when `shift_mean` is False); 0 past the mask."""
    mean = masked_mean(x, mask)
    out = (x - mean) * torch.rsqrt(masked_var(x, mask) + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def shape_scores(
    raw: torch.Tensor,
    finished: torch.Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    clip: float = 0.0,
    missing_eot_penalty: float = 0.0,
) -> torch.Tensor:
    """The score that enters the reward: normalized, clipped, minus a penalty for unfinished responses.

    Normalizing `(raw - mean) / std` (lm-human-preferences measures mean and std on the SFT policy's own
    samples) makes beta and the learning rate mean the same thing for any reward model. `clip > 0` bounds
    one outlier's pull. A response cut off at `max_new_tokens` never said `<|end|>`; the reward model reads
    it as if finished, so without `missing_eot_penalty` the policy can learn to ramble past the cap.
    """
    scores = (raw - mean) / max(std, 1e-8)
    if clip > 0:
        scores = scores.clamp(-clip, clip)
    return scores - missing_eot_penalty * (~finished).float()


def leave_one_out(returns: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO advantages [B] for sequence returns [B] laid out as consecutive groups of `k` (one per prompt)."""
    if k < 2:
        raise ValueError("leave-one-out needs at least 2 samples per prompt")
    groups = returns.view(-1, k)
    baseline = (groups.sum(-1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


def group_normalized(returns: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages [B]: each group's returns minus its mean, divided by its (unbiased) std + eps."""
    if k < 2:
        raise ValueError("group normalization needs at least 2 samples per prompt")
    groups = returns.view(-1, k)
    centered = groups - groups.mean(-1, keepdim=True)
    return (centered / (groups.std(-1, keepdim=True) + eps)).reshape(-1)


def kl_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO's KL term: the masked mean of k3 = exp(ref - logp) - (ref - logp) - 1 >= 0 on the sampled tokens.

    Its gradient pulls the policy toward the reference on the tokens it sampled (an unbiased, low-variance
    estimate of KL(pi || pi_ref), Schulman's "Approximating KL divergence").
    """
    log_ratio = (ref_logp - logp) * mask
    return masked_mean(torch.exp(log_ratio) - log_ratio - 1, mask)
