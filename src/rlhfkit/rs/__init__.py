"""Rejection-sampling fine-tuning (best-of-n distillation, as in Llama 2's RLHF rounds).

- `trainer`: `RSConfig` and `run(cfg) -> Path`: sample n responses per prompt from the current policy, keep the
  reward model's favourite of each prompt, fine-tune on the winners (the SFT stage), repeat for `rounds`.
- `commands`: the `rlhfkit rs` command.
"""

from rlhfkit.rs.trainer import RSConfig, run

__all__ = ["RSConfig", "run"]
