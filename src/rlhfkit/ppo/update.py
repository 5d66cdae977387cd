"""One PPO update: scores -> advantages -> `epochs` passes of clipped PPO over minibatches of the rollout.

`update(cfg, learner, rollout, scores, beta, step) -> metrics` reads top to bottom:

1. advantages and value targets for the configured method (`compute_advantages`: GAE over the critic's values,
   or RLOO's / GRPO's comparison with the other responses to the same prompt), whitened if asked;
2. for each epoch, minibatches in a seeded random order (`minibatch_order`), each giving
   `policy_loss + vf_coef * value_loss - ent_coef * entropy (+ beta * k3 KL) (+ ptx_coef * pretraining loss)`
   (`minibatch_loss`);
3. a gradient step with clipping, skipped when the loss or the gradient is not finite (`apply`);
4. an early stop of the remaining epochs when a minibatch's approximate KL to the rollout policy explodes.

Under torchrun every rank holds the same global rollout and trains its part of each minibatch; what that
changes (each rank's share of the tokens, skips and stops agreed on by every rank) is in `ppo.distributed`,
and it shows here only where `learner.info` is passed on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo import distributed as ranks
from rlhfkit.ppo.advantages import gae, group_normalized, kl_loss, leave_one_out, per_token_rewards, whiten
from rlhfkit.ppo.config import PPOConfig
from rlhfkit.ppo.losses import masked_mean, policy_loss, value_loss
from rlhfkit.ppo.rollout import Rollout
from rlhfkit.train.distributed import DistInfo, any_rank
from rlhfkit.train.precision import Precision


@dataclass
class Learner:
    """What an update trains: `forward(batch) -> (log-probs, entropy, values)` over the policy and its value
    model (`ppo.distributed.training_forward`), the optimizer over their trainable `params`, the policy itself
    for the PPO-ptx term and its corpus (`ptx_stream`, None without it), and this process's place among ranks."""

    forward: Callable
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    policy: torch.nn.Module
    ptx_stream: np.ndarray | None
    info: DistInfo


def amp(cfg: PPOConfig, device: torch.device):
    """The training forwards' mixed precision. `--dtype bfloat16` runs them under a bf16 autocast on any device
    (on a CPU too: the lever `--bf16` used to be); other dtypes take `Precision`'s (a CUDA autocast)."""
    precision = Precision.of(device, cfg.dtype)
    if precision.dtype == torch.bfloat16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return precision.autocast()


def update(
    cfg: PPOConfig, learner: Learner, rollout: Rollout, scores: torch.Tensor, beta: float, step: int
) -> dict:
    """Train on one rollout whose shaped `scores` are given; returns the step's metrics."""
    info = learner.info
    t0 = time.perf_counter()
    mask = rollout.mask
    advantages, returns, kl = compute_advantages(cfg, rollout, scores, beta)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)

    generator = torch.Generator().manual_seed((cfg.loop.seed * 7_919 + step) % 2**62)
    sums: dict[str, float] = {}
    updates, skipped, stopped_at = 0, 0, None
    for epoch in range(cfg.epochs):
        for k, idx in enumerate(
            minibatch_order(rollout.lengths, cfg.minibatch_size, cfg.group_by_length, generator)
        ):
            idx = ranks.local_part(idx, info).to(mask.device)
            where = f"step {step + 1}: non-finite {{}} in epoch {epoch + 1}, minibatch {k + 1}; skipped"
            ptx_key = step * 10_000 + epoch * 1_000 + k
            loss, stats, share = minibatch_loss(
                cfg, learner, rollout, advantages, returns, idx, beta, ptx_key
            )
            if not apply(cfg, learner, loss, stats, where):
                skipped += 1
                continue
            updates += 1
            stats = {name: float(v.detach() if torch.is_tensor(v) else v) for name, v in stats.items()}
            stats = ranks.global_means(stats, share, info)  # the whole minibatch's, on every rank
            for name, v in stats.items():
                sums[name] = sums.get(name, 0.0) + v
            if cfg.max_approx_kl > 0 and stats["approx_kl"] > cfg.max_approx_kl:
                stopped_at = epoch + 1
                break
        if stopped_at is not None:  # every rank stops here: approx_kl is the whole minibatch's
            if info.is_main:
                print(
                    f"step {step + 1}: approx KL {stats['approx_kl']:.3f} > {cfg.max_approx_kl} in epoch "
                    f"{stopped_at}; remaining epochs of this rollout skipped"
                )
            break

    metrics = {name: v / max(updates, 1) for name, v in sums.items()}
    seq_kl = kl.sum(-1)
    if returns is not None:
        metrics["value_explained_var"] = 1 - float(
            torch.var(returns[mask.bool()] - rollout.values[mask.bool()])
        ) / max(float(torch.var(returns[mask.bool()])), 1e-8)
    metrics.update(
        {
            "kl": float(seq_kl.mean()),
            "kl_per_token": float(kl.sum() / mask.sum().clamp(min=1)),
            "score": float(scores.mean()),
            "non_score_reward": float((-beta * seq_kl).mean()),
            "return": float((scores - beta * seq_kl).mean()),
            "updates": updates,
            "minibatches_skipped": skipped,
            "epochs_done": stopped_at if stopped_at is not None else cfg.epochs,
            "time_training": time.perf_counter() - t0,
        }
    )
    return metrics


def minibatch_loss(
    cfg: PPOConfig,
    learner: Learner,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor | None,
    idx: torch.Tensor,
    beta: float,
    ptx_key: int,
) -> tuple[torch.Tensor, dict, float]:
    """(loss, its terms for the metrics, this rank's share of the minibatch's tokens) for the episodes `idx`."""
    info = learner.info
    batch = rollout.rows(idx)
    width = batch["mask"].size(1)
    mb_mask = batch["mask"]
    share = ranks.token_share(mb_mask, info) if info.enabled else 1.0
    with amp(cfg, rollout.mask.device):
        logp, entropy, values = learner.forward(batch)
    pg, pg_stats = policy_loss(
        logp, rollout.logprobs[idx, :width], advantages[idx, :width], mb_mask, cfg.clip
    )
    ent = masked_mean(entropy, mb_mask)
    loss = pg - cfg.ent_coef * ent
    stats = {"policy_loss": pg, "entropy": ent}
    if values is not None:
        vf, vf_stats = value_loss(
            values, rollout.values[idx, :width], returns[idx, :width], mb_mask, cfg.value_clip
        )
        loss = loss + cfg.vf_coef * vf
        stats.update(value_loss=vf, **vf_stats)
    if cfg.kl_penalty == "loss":
        kl_term = kl_loss(logp, rollout.ref_logprobs[idx, :width], mb_mask)
        loss = loss + beta * kl_term
        stats["kl_loss"] = kl_term
    stats.update(grad_norm=None, **pg_stats)  # `apply` sets grad_norm; its place keeps metrics.jsonl's order
    if info.enabled:  # this rank's part of the minibatch's token mean (DDP averages over ranks)
        loss = loss * share
    if learner.ptx_stream is not None:  # the same corpus windows on every rank: DDP's average is this loss
        ptx = ptx_loss(learner.policy, learner.ptx_stream, cfg, ptx_key)
        loss = loss + cfg.ptx_coef * ptx
        stats["ptx_loss"] = ptx
    return loss, stats, share


def apply(cfg: PPOConfig, learner: Learner, loss: torch.Tensor, stats: dict, where: str) -> bool:
    """One clipped gradient step; False (nothing changed) when the loss or the gradient is not finite on any
    rank. `where` names the minibatch in the message, with `{}` for what was not finite."""
    info = learner.info
    non_finite = not torch.isfinite(loss)
    if any_rank(non_finite, info) if info.enabled else non_finite:
        if info.is_main:
            print(where.format("loss"))
        return False
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(learner.params, cfg.loop.grad_clip)
    if not torch.isfinite(grad_norm):  # gradients are all-reduced: every rank sees the same norm
        if info.is_main:
            print(where.format("gradient"))
        learner.optimizer.zero_grad(set_to_none=True)
        return False
    learner.optimizer.step()
    stats["grad_norm"] = grad_norm
    return True


def compute_advantages(
    cfg: PPOConfig, rollout: Rollout, scores: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(advantages [B, R], value targets [B, R] or None, per-token KL [B, R]) for the configured method.

    gae: per-token rewards (the KL penalty on every token when it is in the reward) and GAE over the critic's
    values. rloo / grpo: one number per response — its score, minus beta times its KL when the KL is in the
    reward — compared with the other responses to the same prompt; every token of a response shares it.
    """
    mask = rollout.mask
    reward_beta = beta if cfg.kl_penalty == "reward" else 0.0
    if cfg.advantage == "gae":
        rewards, kl = per_token_rewards(rollout.logprobs, rollout.ref_logprobs, scores, mask, reward_beta)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        return advantages, returns, kl
    kl = (rollout.logprobs - rollout.ref_logprobs) * mask
    sequence_return = scores - reward_beta * kl.sum(-1)
    baseline = leave_one_out if cfg.advantage == "rloo" else group_normalized
    return baseline(sequence_return, cfg.samples_per_prompt)[:, None] * mask, None, kl


def minibatch_order(
    lengths: torch.Tensor, size: int, group_by_length: bool, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch's minibatches: index tensors that cover every episode once, in a random order.

    A minibatch is padded to its longest episode, so mixing a 40-token and a 160-token episode pays for two
    160-token rows. `group_by_length` shuffles, sorts by length (stable, so ties stay shuffled), cuts into
    minibatches of neighbours and shuffles the minibatch order: each epoch still sees every episode once and
    in a random order of minibatches, but an episode shares its gradient step with similar-length ones
    (as `group_by_length` does in Hugging Face's Trainer).
    """
    order = torch.randperm(lengths.numel(), generator=generator)
    if group_by_length:
        order = order[torch.sort(lengths.cpu()[order], stable=True, descending=True).indices]
    chunks = list(order.split(size))
    if group_by_length:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    return chunks


def ptx_stream(cfg: PPOConfig, tokenizer) -> np.ndarray:
    """The PPO-ptx corpus as one token stream."""
    from rlhfkit.train.lm_data import build_streams

    stream = build_streams(cfg.ptx_data, tokenizer, 0.01, None).train
    if len(stream) < cfg.ptx_seq_len + 2:
        raise RlhfkitError(f"{cfg.ptx_data}: corpus too short for --ptx-seq-len {cfg.ptx_seq_len}")
    return stream


def ptx_loss(policy, stream: np.ndarray, cfg: PPOConfig, key: int) -> torch.Tensor:
    """Mean next-token cross-entropy of the policy on random corpus windows (InstructGPT's PPO-ptx term)."""
    from rlhfkit.train.lm_data import sample_windows
    from rlhfkit.train.loop import lm_loss

    windows = torch.from_numpy(
        sample_windows(stream, cfg.ptx_seq_len, cfg.ptx_batch_size, cfg.loop.seed, key)
    )
    windows = windows.long().to(next(policy.parameters()).device)
    loss_sum, count, _ = lm_loss(policy, {"input_ids": windows[:, :-1], "labels": windows[:, 1:]})
    return loss_sum / count.clamp(min=1)
