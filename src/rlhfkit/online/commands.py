"""`rlhfkit online`: iterated RLHF — rounds of sampling, ranking, reward modelling and policy updates."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.online.trainer import OnlineConfig

    p = sub.add_parser(
        "online",
        help="online iterated RLHF: each round ranks samples of the current policy (same total label budget)",
        description="R rounds of: sample candidates from the current policy on fresh prompts, have annotators "
        "rank them (simulated, or people through `rlhfkit annotate`), retrain the reward model on every label "
        "so far, update the policy (PPO against that RM, or DPO on the round's labels) with the KL measured to "
        "the SFT model. --label-budget rankings in all. Resumes at the step where it stopped.",
    )
    add_config_args(p, OnlineConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.online.trainer import OnlineConfig, run

    out = run(config_from_args(OnlineConfig, args, "online"))
    print(f"online: policy written to {out}")
    return 0
