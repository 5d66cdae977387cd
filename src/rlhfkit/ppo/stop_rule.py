"""Stopping before Goodhart without the gold judge: watch reward models and a patience rule.

Optimizing a reward model for long enough finds its blind spots: its score keeps rising while the true
quality falls (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"). On the demo world, PPO for 45
steps instead of 15 learns to refuse nearly everything (docs/methods.md). A real user has no gold judge to see
it, but can train another reward model or two on the same labels and *not* optimize against them. The policy
cannot exploit a model it never sees, so their score on each step's responses ("watch score") keeps tracking
quality after the optimized model's has come loose from it.

The rule (`--watch-reward A,B --stop-patience N`): follow an exponential moving average of the watch score (one
value per step is noisy: 64 episodes); when it has not reached a new best for N steps, stop, and keep the policy
of the best step. With patience 0 the watch score is only logged (`watch_score`, `watch_ema`), to choose N
afterwards (`benchmarks/stop_rule.py`).

On the demo world the watch models failed: trained on the same rankings, they share the optimized model's blind
spot. The same rule can follow audits instead (`--audit-prompts`, `audit.py`): every K steps annotators compare
the policy's answers to held-out prompts with the reference's, and the rule follows the policy's win rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhfkit.ppo.rollout import RewardFn


@dataclass
class StopRule:
    """The patience rule on any score that should rise while the policy gets better: the watch models' mean score
    of each step's responses, or an audit's win rate (`audit.py`)."""

    patience: int  # steps without a new best EMA before stopping; 0: only log
    smoothing: float = 0.8  # EMA weight of the past
    ema: float | None = None
    best: float = float("-inf")
    best_step: int = 0
    last_step: int = 0
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def observe(self, step: int, score: float, policy: torch.nn.Module) -> float:
        """Add step `step`'s score; remember `policy` (the one the score is of) if the EMA is at a new best.
        Returns the EMA."""
        self.ema = score if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * score
        self.last_step = step
        if self.ema > self.best:
            self.best, self.best_step = self.ema, step
            if self.patience > 0:  # only what trains changes (for a LoRA policy: the adapters, not the base)
                self.best_state = {
                    name: p.detach().clone() for name, p in policy.named_parameters() if p.requires_grad
                }
        return self.ema

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.last_step - self.best_step >= self.patience

    def restore_best(self, policy: torch.nn.Module) -> int | None:
        """Load the best step's weights into `policy`; returns that step (None: nothing kept in this process,
        e.g. the best came before a resume)."""
        if self.best_state is None:
            return None
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if name in self.best_state:
                    p.copy_(self.best_state[name])
        return self.best_step

    def state(self) -> dict:
        """What a checkpoint keeps, so a resumed run continues the same average."""
        return {"ema": self.ema, "best": self.best, "best_step": self.best_step, "last_step": self.last_step}

    def load(self, state: dict | None) -> None:
        if state:
            self.ema, self.best, self.best_step = state["ema"], state["best"], state["best_step"]
            self.last_step = state["last_step"]


def watch(
    rule: StopRule,
    score_fn: RewardFn,
    step: int,
    prompts: list[list[dict]],
    texts: list[str],
    policy: torch.nn.Module,
    proxy: torch.Tensor | None = None,
) -> dict:
    """Score step `step`'s responses with the watch models and feed their mean to `rule` (`policy`: the one that
    wrote them, before the step's update). Returns the numbers to log (given `proxy`, the optimized reward
    model's scores of the same responses, also their correlation with the watch scores)."""
    scores = score_fn(prompts, texts, [[] for _ in texts])
    score = sum(scores) / max(len(scores), 1)
    ema = rule.observe(step, score, policy)
    logged = {"watch_score": score, "watch_ema": ema, "watch_best_step": rule.best_step}
    if proxy is not None and len(scores) > 2:
        # How far the optimized reward model and the watch models still rank this step's responses alike
        # (logged only: a candidate signal of over-optimization that `benchmarks/stop_rule.py` can test).
        pair = torch.stack([proxy.double().cpu(), torch.tensor(scores, dtype=torch.float64)])
        logged["watch_corr"] = float(torch.corrcoef(pair)[0, 1].nan_to_num(0.0))
    return logged
