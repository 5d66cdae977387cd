"""`rlhfkit tokenizer train`, `rlhfkit pretrain` (Stage 1) and `rlhfkit sft` (Stage 2): parse, build the config, run."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_command_group, add_config_command


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit import tokenizer
    from rlhfkit.train import pretrain, sft

    tsub = add_command_group(sub, "tokenizer", help="train a byte-level BPE tokenizer with a chat template")
    add_config_command(
        tsub,
        "train",
        tokenizer.TokenizerConfig,
        tokenizer.run,
        section="tokenizer",
        required=("data", "out"),
        help="train a tokenizer on a text corpus",
    )

    stages = [
        (
            "pretrain",
            pretrain.PretrainConfig,
            pretrain.run,
            "pretrain: base model written to {out}",
            "pretrain a base model on raw text (resumes from its last checkpoint)",
            "Next-token prediction on a packed token stream.",
        ),
        (
            "sft",
            sft.SFTConfig,
            sft.run,
            "sft: model written to {out}",
            "supervised fine-tuning on chat demonstrations (resumes from its last checkpoint)",
            "Trains on {'messages': [...]} chats through the tokenizer's chat template; only assistant tokens carry "
            "loss. --epochs sets the number of steps from the data size; --max-steps given alone runs exactly that.",
        ),
    ]
    for name, config, run, done, summary, description in stages:
        add_config_command(
            sub,
            name,
            config,
            run,
            done=done,
            help=summary,
            description=description + " Re-running the same command after a "
            "crash continues from the last checkpoint in --out.",
        )
