"""`rlhfkit ppo`: Stage 3c, PPO against a reward model with a KL leash to the SFT model."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.ppo.trainer import PPOConfig

    p = sub.add_parser(
        "ppo",
        help="improve a policy with PPO against a reward model, leashed to the SFT model by a KL penalty",
        description="Each step samples --batch-size responses, scores them with the reward model, and runs "
        "--epochs passes of clipped PPO over minibatches. Per-token reward: -beta * (logp - logp_ref), plus "
        "the score on the last token; beta adapts toward --kl-target (0: fixed). Logs metrics.jsonl and "
        "samples.jsonl, checkpoints every --save-every steps and resumes from the last checkpoint.",
    )
    add_config_args(
        p,
        PPOConfig,
        {
            "policy": "SFT checkpoint folder (the policy's start and the frozen reference)",
            "reward": "reward model folder",
            "prompts": "prompts JSONL ({'messages': [...]})",
            "out": "output folder",
            "value_model": "'critic' (separate model, init from the RM) or 'head' (value head on the policy)",
        },
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.ppo.trainer import PPOConfig, run

    out = run(config_from_args(PPOConfig, args))
    print(f"ppo: policy written to {out}")
    return 0
