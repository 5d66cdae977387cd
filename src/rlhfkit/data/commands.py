"""`rlhfkit data convert|split|check`: convert HH-RLHF or TRL preference data, split comparisons by prompt item,
validate chats and comparisons. Inputs are record sources (`data.sources`): .jsonl, .jsonl.gz, .parquet, a
`datasets` folder or a Hub dataset name."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_command_group
from rlhfkit.data.jsonl import add_max_line_bytes_arg, line_cap

SOURCE_HELP = (
    "a .jsonl, .jsonl.gz or .parquet file, a `datasets` folder (DIR or DIR:SPLIT) or a Hub dataset "
    "(NAME[/DATA_DIR][#CONFIG][:SPLIT], e.g. Anthropic/hh-rlhf/harmless-base:test)"
)


def register(sub: argparse._SubParsersAction) -> None:
    dsub = add_command_group(sub, "data", metavar="COMMAND", help="convert and check datasets")
    conv = dsub.add_parser("convert", help="convert HH-RLHF or TRL preference data to rlhfkit pairs")
    conv.add_argument("--from", dest="fmt", required=True, choices=["hh", "trl"], help="input format")
    conv.add_argument("--in", dest="input", required=True, metavar="SOURCE", help=SOURCE_HELP)
    conv.add_argument("--out", required=True, help="output comparisons JSONL (.jsonl.gz: compressed)")
    add_max_line_bytes_arg(conv)
    conv.set_defaults(func=_convert)
    split = dsub.add_parser(
        "split", help="hold out 10%% of the prompt items of a comparisons file (as the pipeline does)"
    )
    split.add_argument(
        "--in", dest="input", required=True, help="comparisons JSONL (e.g. comparisons/all.jsonl)"
    )
    split.add_argument("--out", required=True, help="folder for train.jsonl and eval.jsonl")
    split.set_defaults(func=_split)
    check = dsub.add_parser(
        "check", help="validate a chats or comparisons file (errors name file, line, field)"
    )
    check.add_argument("--kind", required=True, choices=["chats", "comparisons"])
    check.add_argument("file", metavar="SOURCE", help=SOURCE_HELP)
    add_max_line_bytes_arg(check)
    check.set_defaults(func=_check)


def _convert(args: argparse.Namespace) -> int:
    from rlhfkit.data.convert import convert_records
    from rlhfkit.data.jsonl import write_jsonl

    # Streamed record by record in bounded memory; write_jsonl renames its temporary file only at the end,
    # so a bad record half-way through leaves no --out behind (and an existing one as it was).
    with line_cap(args.max_line_bytes):
        n = write_jsonl(args.out, convert_records(args.fmt, args.input))
    print(f"data: converted {n} {args.fmt} records -> {args.out}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from rlhfkit.data.comparisons import write_split

    train, held = write_split(args.input, args.out)
    print(f"data: {train} comparisons for training, {held} held out (by prompt item) -> {args.out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    with line_cap(args.max_line_bytes):
        if args.kind == "chats":
            from rlhfkit.data.chats import load_chats

            print(f"{args.file}: {len(load_chats(args.file))} valid chats")
        else:
            from rlhfkit.data.comparisons import load_comparisons

            groups = load_comparisons(args.file)
            pairs = sum(len(g.pairs) for g in groups)
            print(f"{args.file}: {len(groups)} valid comparisons ({pairs} judged pairs)")
    return 0
