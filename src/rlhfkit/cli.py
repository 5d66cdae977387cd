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
from rlhfkit.cuda_report import is_cuda_oom, out_of_memory_message, write_peak_memory
from rlhfkit.errors import RlhfkitError
from rlhfkit.load_policy import allowing

# One line per command module (a stage package's `commands.py`); each exposes `register(subparsers)`.
# `rlhfkit pipeline`, which runs them all, is registered below.
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
    _register_pipeline(sub)
    _add_load_options(parser)
    return parser


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    """`--trust-remote-code` and `--hub-kernels` on every command (load_policy.py: both off by default)."""
    from rlhfkit.load_policy import OPTIONS_HELP

    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:  # a leaf: a command that runs
        group = parser.add_argument_group("model loading (both off by default)")
        for field, help_text in OPTIONS_HELP.items():
            group.add_argument(f"--{field.replace('_', '-')}", action="store_true", help=help_text)
        return
    for action in subcommands:
        for child in set(action.choices.values()):
            _add_load_options(child)


def _register_pipeline(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.pipeline import ALL_STAGE_NAMES

    p = sub.add_parser(
        "pipeline",
        help="run every stage end to end (skips up-to-date stages, resumes interrupted ones)",
        description="world → tokenizer → pretrain → sft → candidates → labels → reward → ppo → evaluate → report. "
        "A TOML --config has one table per stage whose keys are that command's flags, e.g. "
        "[pretrain] preset = 'small'; a top-level `seed` seeds every stage.",
    )
    p.add_argument("--out", required=True, help="run folder, e.g. runs/demo")
    p.add_argument("--config", help="TOML file: [stage] tables of command-line options")
    p.add_argument(
        "--quick", action="store_true", help="a tiny end-to-end run (about a few minutes) to check the setup"
    )
    p.add_argument(
        "--from",
        dest="from_stage",
        choices=ALL_STAGE_NAMES,
        help="rerun from this stage on",
    )
    p.add_argument(
        "--only",
        choices=ALL_STAGE_NAMES,
        help="run only this stage (its inputs must exist)",
    )
    p.add_argument("--until", choices=ALL_STAGE_NAMES, help="stop after this stage")
    p.add_argument(
        "--cai",
        action="store_true",
        help="Constitutional AI variant: SL-CAI, AI-labelled comparisons, RM, PPO",
    )
    p.add_argument(
        "--method",
        default=None,
        help="policy optimization after SFT: ppo (default), dpo, rloo, grpo or rs; a comma-separated list "
        "(ppo,dpo,rs) runs each from the same SFT model and labels and evaluates them side by side",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed for every stage (default: each stage's own, 0)"
    )
    p.set_defaults(func=_pipeline)


def _pipeline(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_toml
    from rlhfkit.pipeline import run_pipeline

    config = load_toml(args.config) if args.config else {}
    if args.seed is not None:
        config["seed"] = args.seed
    data = run_pipeline(
        args.out,
        config,
        quick=args.quick,
        from_stage=args.from_stage,
        only=args.only,
        until=args.until,
        cai=args.cai,
        method=args.method,
    )
    print(
        f"pipeline: finished in {data.get('total_seconds', 0):.0f} s of stage time; see {args.out}/pipeline.json"
    )
    return 0


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
            trust_remote_code=getattr(args, "trust_remote_code", False),
            hub_kernels=getattr(args, "hub_kernels", False),
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
