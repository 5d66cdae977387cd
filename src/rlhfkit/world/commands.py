"""CLI for the demo world: ``rlhfkit world build``, ``rlhfkit judge`` and ``rlhfkit label``."""

from __future__ import annotations

import argparse
import time

from rlhfkit.errors import RlhfkitError


def register(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="the built-in demo world: corpus, demonstrations, prompts")
    wsub = world.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    b = wsub.add_parser("build", help="generate the demo world's files into a folder")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=0, help="random seed (default: 0); same seed, same bytes")
    b.add_argument("--size", choices=("small", "default", "large"), default="default",
                   help="small: tests (~200 KB corpus); default: ~2.5 MB corpus, 10k chats; large: ~15 MB")  # fmt: skip
    b.set_defaults(func=_build)

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

    lab = sub.add_parser("label", help="rank candidate responses with simulated annotators")
    lab.add_argument(
        "--candidates", required=True, help="candidates JSONL (prompt, completions, category, meta)"
    )
    lab.add_argument("--pool-size", type=int, default=10, help="number of simulated annotators (default: 10)")
    lab.add_argument("--overlap", type=int, default=1, help="annotators per item (default: 1)")
    lab.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    lab.add_argument("--out", required=True, help="output JSONL of K-way ranking comparisons")
    lab.add_argument(
        "--agreement-out",
        help="also label the first 500 items again with overlap 2 (measured only, not written to --out) and "
        "write how often two annotators agree on the same pairs (the ceiling for a reward model) to this JSON",
    )
    lab.set_defaults(func=_label)


def _build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rlhfkit.world.build import build_world

    start = time.perf_counter()
    info = build_world(args.out, seed=args.seed, size=args.size)
    table = Table(title=f"demo world (seed {args.seed}, size {args.size}) in {args.out}")
    table.add_column("file")
    table.add_column("records", justify="right")
    table.add_column("per category")
    for name, entry in info["files"].items():
        cats = ", ".join(f"{c} {n}" for c, n in entry.get("categories", {}).items())
        if name == "corpus.jsonl":
            cats = f"{entry['text_bytes'] / 1e6:.2f} MB of text"
        table.add_row(name, str(entry["count"]), cats)
    console = Console()
    console.print(table)
    console.print(f"fingerprint {info['fingerprint'][:16]}  ({time.perf_counter() - start:.1f} s)")
    return 0


def _response_text(value: object, path: str, lineno: int, field: str = "response") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in value
    ):
        return "".join(m["content"] for m in value)
    raise RlhfkitError.at(path, lineno, field, "expected a string or a list of assistant messages")


def _messages(value: object, path: str, lineno: int, field: str) -> list[dict]:
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    )
    if not ok:
        raise RlhfkitError.at(path, lineno, field, "expected a non-empty list of {role, content} messages")
    return value


def _judge(args: argparse.Namespace) -> int:
    from rlhfkit.data.jsonl import read_jsonl, write_jsonl
    from rlhfkit.world.judge import score

    out = []
    for lineno, rec in read_jsonl(args.inp):
        messages = _messages(rec.get("messages"), args.inp, lineno, "messages")
        if "response" not in rec:
            raise RlhfkitError.at(args.inp, lineno, "response", "missing; expected the response to score")
        meta = rec.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise RlhfkitError.at(args.inp, lineno, "meta", "expected an object")
        s = score(messages, _response_text(rec["response"], args.inp, lineno), meta)
        out.append({**rec, "gold": s.total, "gold_parts": s.parts, "gold_task": s.task})
    n = write_jsonl(args.out, out)
    mean = sum(r["gold"] for r in out) / n if n else 0.0
    unknown = sum(r["gold_task"] == "unknown" for r in out)
    note = f"; {unknown} not recognised as a world task, scored on generic parts only" if unknown else ""
    print(f"judge: scored {n} responses (mean gold {mean:.2f}{note}) -> {args.out}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from rlhfkit.data.jsonl import read_jsonl, write_jsonl
    from rlhfkit.world.annotators import label_candidates

    if args.pool_size < 1:
        raise RlhfkitError("--pool-size must be at least 1")
    if not 1 <= args.overlap <= args.pool_size:
        raise RlhfkitError(f"--overlap must be between 1 and --pool-size ({args.pool_size})")
    records = []
    for lineno, rec in read_jsonl(args.candidates):
        _messages(rec.get("prompt"), args.candidates, lineno, "prompt")
        comps = rec.get("completions")
        if not isinstance(comps, list) or len(comps) < 2:
            raise RlhfkitError.at(
                args.candidates, lineno, "completions", "expected a list of at least 2 completions"
            )
        for c in comps:
            _response_text(c, args.candidates, lineno, "completions")
        if rec.get("meta") is not None and not isinstance(rec["meta"], dict):
            raise RlhfkitError.at(args.candidates, lineno, "meta", "expected an object")
        records.append({**rec, "id": str(rec.get("id", f"line{lineno}"))})
    labels = label_candidates(records, pool_size=args.pool_size, overlap=args.overlap, seed=args.seed)
    write_jsonl(args.out, labels)
    if args.agreement_out:
        import json

        from rlhfkit.world.annotators import agreement_ceiling

        ceiling = agreement_ceiling(records[:500], pool_size=args.pool_size)
        with open(args.agreement_out, "w", encoding="utf-8") as fh:
            json.dump(ceiling, fh, indent=2)
        print(f"label: two annotators agree on {ceiling['pairwise_agreement']:.1%} of {ceiling['pairs']} pairs "
              f"-> {args.agreement_out}")  # fmt: skip
    seconds = sum(r["seconds"] for r in labels)
    print(f"label: {len(labels)} rankings of {len(records)} items by {args.pool_size} simulated annotators "
          f"(overlap {args.overlap}, {seconds / 3600:.1f} simulated hours) -> {args.out}")  # fmt: skip
    return 0
