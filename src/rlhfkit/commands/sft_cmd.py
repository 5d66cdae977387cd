"""`rlhfkit sft`: Stage 2, supervised fine-tuning on chats with the loss on assistant tokens only."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.train.sft import SFTConfig

    p = sub.add_parser(
        "sft",
        help="supervised fine-tuning on chat demonstrations (resumes from its last checkpoint)",
        description="Trains on {'messages': [...]} chats through the tokenizer's chat template; only assistant "
        "tokens carry loss. --epochs sets the number of steps (0: use --max-steps).",
    )
    add_config_args(
        p,
        SFTConfig,
        {
            "model": "base checkpoint folder",
            "data": "chats JSONL",
            "val_data": "held-out chats JSONL",
            "out": "output folder",
        },
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.train.sft import SFTConfig, run

    out = run(config_from_args(SFTConfig, args))
    print(f"sft: model written to {out}")
    return 0
