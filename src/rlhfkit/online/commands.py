"""`rlhfkit online`: iterated RLHF — rounds of sampling, ranking, reward modelling and policy updates."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_command


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.online.trainer import OnlineConfig, run

    add_config_command(
        sub,
        "online",
        OnlineConfig,
        run,
        done="online: policy written to {out}",
        help="online iterated RLHF: each round ranks samples of the current policy (same total label budget)",
        description="R rounds of: sample candidates from the current policy on fresh prompts, have annotators "
        "rank them (simulated, or people through `rlhfkit annotate`), retrain the reward model on every label "
        "so far, update the policy (PPO against that RM, or DPO on the round's labels) with the KL measured to "
        "the SFT model. --label-budget rankings in all. Resumes at the step where it stopped.",
    )
