"""CLI for the demo world: ``rlhfkit world build``, ``rlhfkit world tools``, ``rlhfkit judge`` and ``rlhfkit label``."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_command_group, add_config_command
from rlhfkit.errors import RlhfkitError
from rlhfkit.serve.commands import add_listen_flags


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.world import build, labels

    wsub = add_command_group(sub, "world", help="the built-in demo world: corpus, demonstrations, prompts")
    add_config_command(
        wsub,
        "build",
        build.WorldConfig,
        build.run,
        section="world",
        required=("out",),
        help="generate the demo world's files into a folder",
    )

    t = wsub.add_parser(
        "tools",
        help="serve the world's tools (lookup, calculator) over HTTP: a local tool server for function calling",
    )
    add_listen_flags(t, 8001, "port (default 8001; `rlhfkit serve` takes 8000)", "every request")
    t.set_defaults(func=_tools)

    j = sub.add_parser("judge", help="score responses with the demo world's gold judge")
    j.add_argument(
        "--in", dest="inp", required=True, help="JSONL with `messages` and `response` (optional `meta`)"
    )
    j.add_argument(
        "--out",
        required=True,
        help="output JSONL: each line plus `gold`, `gold_parts` and `gold_task` (the category scored; "
        "`unknown`: not recognised, scored on intent, length and fluency only)",
    )
    j.set_defaults(func=_judge)

    add_config_command(
        sub,
        "label",
        labels.LabelsConfig,
        labels.run,
        section="labels",
        required=("candidates", "out"),
        aliases=["labels"],  # the pipeline stage's name
        help="rank candidate responses with simulated annotators",
    )


def _tools(args: argparse.Namespace) -> int:
    from rlhfkit.serve.server import run
    from rlhfkit.world.tool_server import create_tool_app

    print(f"world tools: http://{args.host}:{args.port}/tools (GET: the specs; POST /tools/NAME: a call)")
    run(create_tool_app(args.api_key), host=args.host, port=args.port)
    return 0


def _judge(args: argparse.Namespace) -> int:
    from rlhfkit.data.jsonl import read_jsonl, write_jsonl
    from rlhfkit.world.judge import score
    from rlhfkit.world.labels import chat_messages, response_text

    out = []
    for lineno, rec in read_jsonl(args.inp):
        messages = chat_messages(rec.get("messages"), args.inp, lineno, "messages")
        if "response" not in rec:
            raise RlhfkitError.at(args.inp, lineno, "response", "missing; expected the response to score")
        meta = rec.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise RlhfkitError.at(args.inp, lineno, "meta", "expected an object")
        s = score(messages, response_text(rec["response"], args.inp, lineno), meta)
        out.append({**rec, "gold": s.total, "gold_parts": s.parts, "gold_task": s.task})
    n = write_jsonl(args.out, out)
    mean = sum(r["gold"] for r in out) / n if n else 0.0
    unknown = sum(r["gold_task"] == "unknown" for r in out)
    note = f"; {unknown} not recognised as a world task, scored on generic parts only" if unknown else ""
    print(f"judge: scored {n} responses (mean gold {mean:.2f}{note}) -> {args.out}")
    return 0
