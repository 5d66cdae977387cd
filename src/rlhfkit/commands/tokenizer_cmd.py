"""`rlhfkit tokenizer train`: a byte-level BPE tokenizer with chat special tokens and template."""

from __future__ import annotations

import argparse

from rlhfkit.errors import RlhfkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer with a chat template")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    t = tsub.add_parser("train", help="train a tokenizer on a text corpus")
    t.add_argument("--data", required=True, help="a .txt/.jsonl file or a folder of them")
    t.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size (default: 4096)")
    t.add_argument("--out", required=True, help="output folder (Hugging Face tokenizer)")
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from rlhfkit.tokenizer import train_tokenizer

    if args.vocab_size <= 0:
        raise RlhfkitError("--vocab-size must be positive")
    tok = train_tokenizer(args.data, args.vocab_size, args.out)
    print(f"tokenizer: {len(tok)} tokens written to {args.out}")
    return 0
