"""Online iterated RLHF (Bai et al. 2022's "online" HH data; Llama 2's rounds).

- `trainer`: `OnlineConfig` and `run(cfg) -> Path`: R rounds of sample from the current policy -> annotators
  rank -> reward model retrained on every label so far -> policy update, within one total label budget.
- `commands`: the `rlhfkit online` command.
"""

from rlhfkit.online.trainer import OnlineConfig, run

__all__ = ["OnlineConfig", "run"]
