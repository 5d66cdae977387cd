"""`rlhfkit pretrain`: Stage 1, a base model from raw text."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args
from rlhfkit.errors import RlhfkitError


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.train.pretrain import PretrainConfig

    p = sub.add_parser(
        "pretrain",
        help="pretrain a base model on raw text (resumes from its last checkpoint)",
        description="Next-token prediction on a packed token stream. Re-running the same command after a crash "
        "continues from the last checkpoint in --out.",
    )
    add_config_args(
        p,
        PretrainConfig,
        {
            "data": "corpus: .txt/.jsonl file or folder",
            "tokenizer": "tokenizer folder",
            "out": "output folder",
            "preset": "model size: micro, tiny, small, medium",
            "init_from": "continue from a Hugging Face checkpoint folder instead of a fresh preset",
        },
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.train.pretrain import PretrainConfig, run

    cfg = config_from_args(PretrainConfig, args)
    if not cfg.data:
        raise RlhfkitError("--data is required (a .txt/.jsonl file or folder)")
    if not cfg.tokenizer:
        raise RlhfkitError("--tokenizer is required (a folder from `rlhfkit tokenizer train`)")
    out = run(cfg)
    print(f"pretrain: base model written to {out}")
    return 0
