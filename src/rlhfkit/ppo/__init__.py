"""Stage 3c: PPO against a reward model, with a KL leash to the SFT model.

One job per file, in the order a PPO step runs them:

- `rollout`: sample responses with the generation engine, score them with the reward model (or a Python
  reward function), and compute the reference log-probs, the old log-probs and the values in one batched
  forward each (logits only on response positions).
- `advantages`: per-token rewards (-beta * KL on every token, the score on the last), GAE, whitening.
- `kl_controller`: the KL coefficient beta, fixed or adaptive (Ziegler et al. 2019).
- `losses`: the clipped policy objective, the clipped value loss, entropy and approximate KL.
- `trainer`: `PPOConfig` and `run(cfg) -> Path`: the outer loop (rollout, several epochs over minibatches,
  logging, checkpoints and resume, Hugging Face output).
- `commands`: the `rlhfkit ppo` command.
"""

from rlhfkit.ppo.trainer import PPOConfig, run

__all__ = ["PPOConfig", "run"]
