"""The KL coefficient beta that leashes the policy to the reference model.

Fixed: beta never changes. Adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences"): steer the measured KL toward a target with a proportional controller,

    e    = clip(KL / KL_target - 1, -0.2, 0.2)
    beta = beta * (1 + e * n / horizon)

where KL is the mean per-response KL (nats, summed over tokens) of the last rollout and n the number of
episodes in it. Too much KL raises beta (a tighter leash), too little lowers it; the clip keeps one noisy
batch from moving beta by more than 0.2 * n / horizon, and `horizon` (in episodes) sets how fast it reacts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KLController:
    """`target` None (or <= 0): fixed beta; else adaptive toward `target` nats per response."""

    beta: float
    target: float | None = None
    horizon: int = 10_000

    @property
    def adaptive(self) -> bool:
        return self.target is not None and self.target > 0

    def update(self, kl: float, n_episodes: int) -> float:
        """Feed the last rollout's mean per-response KL; return the new beta."""
        if self.adaptive:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)  # type: ignore[operator]
            self.beta *= 1.0 + error * n_episodes / self.horizon
        return self.beta
