"""Direct Preference Optimization (and IPO): train a policy from comparisons, with no reward model.

One job per file:

- `losses`: the DPO (sigmoid, with soft labels and cDPO label smoothing) and IPO pairwise losses, the implicit
  rewards beta * log(pi / pi_ref) and their accuracy; the math is in its docstring.
- `data`: comparison groups as token rows (chat template; labels on each completion's tokens) and micro-batches.
- `logprobs`: sequence log-probs through the model's logits; the frozen reference's, computed once and cached.
- `trainer`: `DPOConfig` and `run(cfg) -> Path` over the shared training loop.
- `commands`: the `rlhfkit dpo` command.
"""

from rlhfkit.dpo.trainer import DPOConfig, run

__all__ = ["DPOConfig", "run"]
