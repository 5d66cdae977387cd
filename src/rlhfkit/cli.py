"""The `rlhfkit` command.

Each stage lives in its own module and contributes a subcommand through ``register(subparsers)``;
the subcommand's handler is stored with ``set_defaults(func=...)`` and receives the parsed namespace.
Every module listed here is imported when the parser is built (each keeps its heavy imports inside its
handlers, so `rlhfkit --help` stays fast); a module that fails to import fails the command loudly instead of
silently dropping its subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rlhfkit.allocator import keep_freed_memory
from rlhfkit.errors import RlhfkitError

# One line per command module (a stage package's `commands.py`); each exposes `register(subparsers)`.
# `rlhfkit pipeline`, which runs them all in-process, is `pipeline/commands.py`.
COMMAND_MODULES = [
    "rlhfkit.train.commands",
    "rlhfkit.generation.commands",
    "rlhfkit.world.commands",
    "rlhfkit.reward.commands",
    "rlhfkit.data.commands",
    "rlhfkit.ppo.commands",
    "rlhfkit.dpo.commands",
    "rlhfkit.rs.commands",
    "rlhfkit.online.commands",
    "rlhfkit.annotate.commands",
    "rlhfkit.evaluate.commands",
    "rlhfkit.serve.commands",
    "rlhfkit.cai.commands",
    "rlhfkit.modelio.commands",
    "rlhfkit.pipeline.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhfkit",
        description="Turn a raw text corpus into a helpful assistant: pretrain, SFT, reward model, PPO, CAI.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)  # a module that fails to import is a bug: say so
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (long-sequence warnings while packing, shard-writing bars) out of our progress output."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _version() -> str:
    from rlhfkit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    keep_freed_memory()  # big per-step tensors reuse malloc's memory instead of fresh pages (allocator.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except RlhfkitError as exc:
        print(f"rlhfkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rlhfkit: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
