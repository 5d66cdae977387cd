"""`rlhfkit tokenizer train`, `rlhfkit pretrain` (Stage 1) and `rlhfkit sft` (Stage 2): parse, build the config, run."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.tokenizer import TokenizerConfig
    from rlhfkit.train.pretrain import PretrainConfig
    from rlhfkit.train.sft import SFTConfig

    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer with a chat template")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    t = tsub.add_parser("train", help="train a tokenizer on a text corpus")
    add_config_args(t, TokenizerConfig, required=("data", "out"))
    t.set_defaults(func=_tokenizer)

    stages = [
        (
            "pretrain",
            PretrainConfig,
            _pretrain,
            "pretrain a base model on raw text (resumes from its last checkpoint)",
            "Next-token prediction on a packed token stream.",
        ),
        (
            "sft",
            SFTConfig,
            _sft,
            "supervised fine-tuning on chat demonstrations (resumes from its last checkpoint)",
            "Trains on {'messages': [...]} chats through the tokenizer's chat template; only assistant tokens carry "
            "loss. --epochs sets the number of steps from the data size; --max-steps given alone runs exactly that.",
        ),
    ]
    for name, config, func, summary, description in stages:
        p = sub.add_parser(
            name,
            help=summary,
            description=description + " Re-running the same command after a "
            "crash continues from the last checkpoint in --out.",
        )
        add_config_args(p, config)
        p.set_defaults(func=func)


def _tokenizer(args: argparse.Namespace) -> int:
    from rlhfkit.tokenizer import TokenizerConfig, run

    run(config_from_args(TokenizerConfig, args, "tokenizer"))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from rlhfkit.train.pretrain import PretrainConfig, run

    out = run(config_from_args(PretrainConfig, args, "pretrain"))
    print(f"pretrain: base model written to {out}")
    return 0


def _sft(args: argparse.Namespace) -> int:
    from rlhfkit.train.sft import SFTConfig, run

    out = run(config_from_args(SFTConfig, args, "sft"))
    print(f"sft: model written to {out}")
    return 0
