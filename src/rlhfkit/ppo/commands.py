"""`rlhfkit ppo`, `rlhfkit rloo` and `rlhfkit grpo`: one policy-gradient loop against a reward model, leashed
to the SFT model by a KL penalty. They differ only in how an episode's advantage is computed (and in their
defaults): a learned critic and GAE (PPO), or the other responses to the same prompt (RLOO, GRPO)."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_command

COMMANDS = {
    "ppo": (
        "PPOConfig",
        "improve a policy with PPO against a reward model, leashed to the SFT model by a KL penalty",
        "Each step samples --batch-size responses, scores them with the reward model, and runs --epochs passes "
        "of clipped PPO over minibatches, with a critic and GAE. Per-token reward: -beta * (logp - logp_ref), "
        "plus the score on the last token; beta adapts toward --kl-target (0: fixed).",
    ),
    "rloo": (
        "RLOOConfig",
        "critic-free RL (REINFORCE leave-one-out): k responses per prompt, each baseline the others' mean",
        "Each step samples --samples-per-prompt responses to --batch-size / k prompts. A response's advantage is "
        "its return (score - beta * KL) minus the mean return of the other responses to its prompt; the update "
        "is PPO's clipped objective without a value model (half of PPO's training work).",
    ),
    "grpo": (
        "GRPOConfig",
        "critic-free RL with group-normalized advantages and the KL in the loss (GRPO)",
        "Each step samples --samples-per-prompt responses to --batch-size / k prompts. A response's advantage is "
        "its score standardized within its prompt's group; the KL to the reference is a k3 loss term weighted "
        "by beta; the update is PPO's clipped objective without a value model.",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.ppo import trainer

    for name, (config_name, summary, description) in COMMANDS.items():
        add_config_command(
            sub,
            name,
            getattr(trainer, config_name),
            trainer.run,
            done=name + ": policy written to {out}",
            help=summary,
            description=description + " Logs metrics.jsonl and samples.jsonl, checkpoints every --save-every "
            "steps and resumes from the last checkpoint.",
        )
