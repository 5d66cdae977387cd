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

from rlhfkit.allocator import keep_freed_memory, preload_tcmalloc
from rlhfkit.cuda_report import is_cuda_oom, out_of_memory_message, write_peak_memory
from rlhfkit.errors import RlhfkitError
from rlhfkit.load_policy import allowing

# One line per command module (a stage package's `commands.py`); each exposes `register(subparsers)`.
# `rlhfkit pipeline`, which runs them all in-process, is `pipeline/commands.py`.
COMMAND_MODULES = [
    "rlhfkit.train.commands",
    "rlhfkit.generation.commands",
    "rlhfkit.world.commands",
    "rlhfkit.reward.commands",
    "rlhfkit.prm.commands",
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
    _add_load_options(parser)
    return parser


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    """`--trust-remote-code` and `--hub-kernels` on every command (load_policy.py: both off by default)."""
    from rlhfkit.load_policy import OPTIONS_HELP

    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:  # a leaf: a command that runs
        group = parser.add_argument_group("model loading (both off by default)")
        for field, help_text in OPTIONS_HELP.items():
            # default None, not False: no stage flag writes a default of its own (tests/test_defaults.py)
            group.add_argument(
                f"--{field.replace('_', '-')}", action="store_true", default=None, help=help_text
            )
        return
    for action in subcommands:
        for child in set(action.choices.values()):
            _add_load_options(child)


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


def _lost_peer_message(exc: RuntimeError) -> str | None:
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None  # keeps torch unimported for one-process errors
    from rlhfkit.train.distributed import lost_peer_message

    return lost_peer_message(exc)


def _command_name(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """The words that chose the command (`reward train`), for messages."""
    words = []
    for word in argv:
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subcommands or word not in subcommands[0].choices:
            break
        words.append(word)
        parser = subcommands[0].choices[word]
    return " ".join(words)


def _version() -> str:
    from rlhfkit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program (not called from Python): tcmalloc where installed (allocator.py)
        preload_tcmalloc()
    _quiet_libraries()
    keep_freed_memory()  # big per-step tensors reuse malloc's memory instead of fresh pages (allocator.py)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with allowing(
            trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
            hub_kernels=bool(getattr(args, "hub_kernels", False)),
        ):
            result = args.func(args)
    except RlhfkitError as exc:
        print(f"rlhfkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rlhfkit: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if is_cuda_oom(exc):
            print(
                f"rlhfkit: error: {out_of_memory_message(_command_name(parser, argv), args, exc)}",
                file=sys.stderr,
            )
            return 1
        lost = _lost_peer_message(exc)
        if lost is None:
            raise
        print(f"rlhfkit: error: {lost}", file=sys.stderr)
        return 1
    finally:
        write_peak_memory()  # only when $RLHFKIT_PEAK_MEMORY_FILE asks and CUDA was used
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
