"""`rlhfkit prm label|train`: step labels from the demo world's solutions, and a process reward model on them."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_command_group, add_config_command


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.prm.label import PRMLabelConfig
    from rlhfkit.prm.label import run as label
    from rlhfkit.prm.train import PRMConfig
    from rlhfkit.prm.train import run as train

    psub = add_command_group(
        sub, "prm", metavar="COMMAND", help="process reward models: step labels, training"
    )
    add_config_command(
        psub,
        "label",
        PRMLabelConfig,
        label,
        section="prm_label",
        done="prm: labelled episodes written to {out}",
        help="play tool-using episodes and label every tool call from the task's solution (resumable)",
        description="A policy plays each verifiable prompt SAMPLES times with the demo world's tools; every tool "
        "call is labelled right or wrong from the task's solution steps (prm/steps.py), one episode per line.",
    )
    add_config_command(
        psub,
        "train",
        PRMConfig,
        train,
        section="prm",
        done="prm: process reward model written to {out}",
        help="train a process reward model on labelled steps (resumes from its last checkpoint)",
        description="A scalar head on any backbone learns P(step right) with binary cross-entropy; use it with "
        "`ppo|grpo|rloo --reward verifier+process --process-model OUT` in place of the world's step check.",
    )
