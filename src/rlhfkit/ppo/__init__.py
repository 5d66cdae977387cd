"""Stage 3c: PPO against a reward model, with a KL leash to the SFT model.

One job per file, in the order a PPO step runs them:

- `rollout`: sample responses with the generation engine, score them with the reward model (or a Python
  reward function), and compute the reference log-probs, the old log-probs and the values in one batched
  forward each (logits only on response positions).
- `advantages`: per-token rewards (-beta * KL on every token, the score on the last), GAE, whitening, and
  the critic-free baselines of RLOO (leave-one-out) and GRPO (group-normalized, KL as a loss term).
- `kl_controller`: the KL coefficient beta, fixed or adaptive (Ziegler et al. 2019).
- `losses`: the clipped policy objective, the clipped value loss, entropy and approximate KL.
- `config`: `PPOConfig` (the shared loop's settings nested in `loop`; one precision option, `dtype`) and the
  RLOO and GRPO defaults of it.
- `update`: one update on a rollout: advantages, then several epochs of clipped PPO over minibatches.
- `trainer`: `run(cfg) -> Path`: the outer loop (roll out, update, logging, checkpoints and resume, Hugging
  Face output).
- `commands`: the `rlhfkit ppo`, `rlhfkit rloo` and `rlhfkit grpo` commands (one loop, three defaults).
"""

from rlhfkit.ppo.config import GRPOConfig, PPOConfig, RLOOConfig
from rlhfkit.ppo.trainer import run

__all__ = ["GRPOConfig", "PPOConfig", "RLOOConfig", "run"]
