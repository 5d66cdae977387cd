"""The DPO and IPO pairwise policy losses, and the implicit rewards they define.

DPO (Rafailov et al. 2023) starts from the KL-regularized RLHF objective
    max_pi  E[r(x, y)] - beta * KL(pi || pi_ref),
whose optimum is pi*(y|x) = pi_ref(y|x) * exp(r(x, y) / beta) / Z(x). Solved for the reward,
    r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) + beta * log Z(x),
so every policy *is* a reward model: its implicit reward is `beta * (log pi(y|x) - log pi_ref(y|x))`.
Z(x) depends only on the prompt and cancels in a comparison of two responses to it. With sequence
log-probs (sums over the response tokens) write

    h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)),

so the implicit reward margin is beta * h. Putting it into the Bradley-Terry model P(y_w > y_l) =
sigmoid(r_w - r_l) and fitting a target probability p that y_w is preferred gives

    sigmoid (DPO):  L = -[ p * log sigmoid(beta * h) + (1 - p) * log sigmoid(-beta * h) ]

which is exactly the reward model's loss on score difference beta * h, so it reuses `preference_loss`.
p = 1 for a hard preference (the paper's -log sigmoid(beta * h)), 0.5 for a tie (pulls h to 0), the soft label
of an AI labeler otherwise. Conservative DPO (cDPO) assumes labels are flipped with probability eps and fits
p' = p * (1 - eps) + (1 - p) * eps instead: the loss then stops pushing once sigmoid(beta * h) = 1 - eps,
rather than driving h to infinity on data that may be wrong.

    ipo (Azar et al. 2023):  L = (h - (2p - 1) / (2 * beta))^2

IPO regresses h to a finite target instead: the sigmoid loss keeps rewarding larger h on deterministic
preferences, so the policy can drift arbitrarily far from the reference; IPO's squared loss stops at
h = 1 / (2 * beta) for p = 1 (beta acts as the strength of the leash: smaller beta, larger target) and at h = 0
for a tie. The target (2p - 1) / (2 beta) is the soft-label generalization (IPO's Psi = identity fitted to p),
and label smoothing moves p toward 0.5 the same way as for DPO.

Gradients, useful to read what each loss does (sigma = sigmoid(beta * h)):
    sigmoid:  dL/dh = beta * (sigma - p)        -> vanishes once the implicit model agrees with p
    ipo:      dL/dh = 2 * (h - (2p - 1) / (2 beta))
and dL/dlog pi(y_w) = dL/dh = -dL/dlog pi(y_l); the reference log-probs are constants.

A pair's `margin` (a reward-model score gap from the annotation tool) is not used: it is measured in reward
model units, not in beta * log-ratio units.
"""

from __future__ import annotations

import torch

from rlhfkit.reward.train import preference_loss

LOSSES = ("sigmoid", "ipo")


def smooth_target(target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """cDPO: the label is wrong with probability eps, so the target p becomes p * (1 - eps) + (1 - p) * eps."""
    return target * (1 - label_smoothing) + (1 - target) * label_smoothing


def pairwise_loss(
    h: torch.Tensor, target: torch.Tensor, beta: float, loss: str = "sigmoid", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-pair loss of log-ratio differences `h` against target probabilities `target` (see module docstring)."""
    p = smooth_target(target, label_smoothing)
    if loss == "sigmoid":
        return preference_loss(beta * h, p, torch.zeros_like(h))
    if loss == "ipo":
        return (h - (2 * p - 1) / (2 * beta)) ** 2
    raise ValueError(f"unknown DPO loss '{loss}' (choose from: {', '.join(LOSSES)})")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    target: torch.Tensor,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen implicit rewards, rejected implicit rewards) from sequence log-probs.

    "Chosen" is the pair's `better` side: the one the target probability `target` refers to. The rewards
    beta * (log pi - log pi_ref) are detached; they are for logging and accuracy.
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    losses = pairwise_loss(chosen_ratio - rejected_ratio, target, beta, loss, label_smoothing)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def reward_stats(chosen: torch.Tensor, rejected: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean implicit rewards, their margin, and accuracy: how often the implicit reward ranks pairs as judged.

    Accuracy counts decisive pairs only (a tie has no right order); a soft label below 0.5 favours `rejected`.
    It is left out when there is no decisive pair, rather than reported as NaN.
    """
    with torch.no_grad():
        stats = {
            "reward_chosen": float(chosen.mean()),
            "reward_rejected": float(rejected.mean()),
            "reward_margin": float((chosen - rejected).mean()),
        }
        decisive = target != 0.5
        if bool(decisive.any()):
            right = ((chosen - rejected) > 0) == (target > 0.5)
            stats["reward_accuracy"] = float(right[decisive].float().mean())
    return stats
