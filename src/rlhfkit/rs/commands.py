"""`rlhfkit rs`: rejection-sampling fine-tuning (best-of-n by the reward model, then SFT on the winners)."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_command


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.rs.trainer import RSConfig, run

    add_config_command(
        sub,
        "rs",
        RSConfig,
        run,
        done="rs: policy written to {out}",
        help="rejection-sampling fine-tuning: keep the reward model's best of n samples, fine-tune on them",
        description="Each round samples --n responses to each prompt from the current policy, keeps the reward "
        "model's favourite finished response per prompt and fine-tunes the policy on those winners (SFT loss). "
        "Rounds, samples and fine-tuning all resume where they stopped.",
    )
