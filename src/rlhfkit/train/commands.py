"""`rlhfkit tokenizer train`, `rlhfkit pretrain` (Stage 1) and `rlhfkit sft` (Stage 2): parse, build the config, run."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args
from rlhfkit.errors import RlhfkitError


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.train.pretrain import PretrainConfig
    from rlhfkit.train.sft import SFTConfig

    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer with a chat template")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    t = tsub.add_parser("train", help="train a tokenizer on a text corpus")
    t.add_argument("--data", required=True, help="a .txt/.jsonl file or a folder of them")
    t.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size (default: 4096)")
    t.add_argument("--out", required=True, help="output folder (Hugging Face tokenizer)")
    t.set_defaults(func=_tokenizer)

    stages = [
        ("pretrain", PretrainConfig, _pretrain, "pretrain a base model on raw text (resumes from its last checkpoint)",
         "Next-token prediction on a packed token stream."),
        ("sft", SFTConfig, _sft, "supervised fine-tuning on chat demonstrations (resumes from its last checkpoint)",
         "Trains on {'messages': [...]} chats through the tokenizer's chat template; only assistant tokens carry "
         "loss. --epochs sets the number of steps from the data size; --max-steps given alone runs exactly that."),
    ]  # fmt: skip
    for name, config, func, summary, description in stages:
        p = sub.add_parser(name, help=summary, description=description + " Re-running the same command after a "
                           "crash continues from the last checkpoint in --out.")  # fmt: skip
        add_config_args(p, config)
        p.set_defaults(func=func)


def _tokenizer(args: argparse.Namespace) -> int:
    from rlhfkit.tokenizer import train_tokenizer

    if args.vocab_size <= 0:
        raise RlhfkitError("--vocab-size must be positive")
    tok = train_tokenizer(args.data, args.vocab_size, args.out)
    print(f"tokenizer: {len(tok)} tokens written to {args.out}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from rlhfkit.train.pretrain import PretrainConfig, run

    cfg = config_from_args(PretrainConfig, args, "pretrain")
    if not cfg.data:
        raise RlhfkitError("--data is required (a .txt/.jsonl file or folder)")
    if not cfg.tokenizer:
        raise RlhfkitError("--tokenizer is required (a folder from `rlhfkit tokenizer train`)")
    out = run(cfg)
    print(f"pretrain: base model written to {out}")
    return 0


def _sft(args: argparse.Namespace) -> int:
    from rlhfkit.train.sft import SFTConfig, run

    out = run(config_from_args(SFTConfig, args, "sft"))
    print(f"sft: model written to {out}")
    return 0
