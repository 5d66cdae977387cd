"""`rlhfkit evaluate` (compare models on held-out prompts) and `rlhfkit report` (rebuild report.html)."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args
from rlhfkit.errors import RlhfkitError


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.evaluate.report import ReportConfig
    from rlhfkit.evaluate.run import EvalConfig

    ev = sub.add_parser(
        "evaluate",
        help="compare models head to head on held-out prompts (win rates, ranking, probes)",
        description="Sample every --model on the same --prompts, score the responses with --judge, and write "
        "results.json (win rates, Bradley-Terry/Elo ranking with bootstrap intervals, per-category results, "
        "probe rates) and responses.jsonl (side-by-side responses) to --out.",
    )
    ev.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        required=True,
        help="a model to evaluate, named for the tables (repeatable; order = table order, e.g. base, sft, ppo)",
    )
    add_config_args(ev, EvalConfig, required=("prompts", "out"), skip=("models",))
    ev.add_argument("--report", action="store_true", help="also write report.html into --out")
    ev.set_defaults(func=_evaluate)

    rep = sub.add_parser(
        "report",
        help="(re)build report.html for a run folder",
        description="Write RUN/report.html: a static page with every stage's curves and numbers, the "
        "evaluation's win rates, ranking and probes, and side-by-side responses. Opens offline.",
    )
    rep.add_argument(
        "run_dir", nargs="?", metavar="RUN", help="run folder (runs/NAME) or an evaluation folder"
    )
    add_config_args(rep, ReportConfig)
    rep.set_defaults(func=_report)


def parse_models(specs: list[str]) -> dict[str, str]:
    """{name: folder} from NAME=DIR strings, in the given order; names must be unique."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise RlhfkitError(f"--model: expected NAME=DIR (e.g. sft=runs/demo/sft), got '{spec}'")
        if name in models:
            raise RlhfkitError(f"--model: the name '{name}' is used twice; names must be unique")
        models[name] = folder
    return models


def _evaluate(args: argparse.Namespace) -> int:
    from rlhfkit.evaluate.report import write_report
    from rlhfkit.evaluate.run import EvalConfig, run

    cfg = config_from_args(EvalConfig, args, "evaluate")
    cfg.models = parse_models(args.model)
    if not run(cfg):  # another rank of a torchrun job: rank 0 writes and reports
        return 0
    print(f"evaluate: results written to {args.out}/results.json and {args.out}/responses.jsonl")
    if args.report:
        print(f"evaluate: report written to {write_report(args.out)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from rlhfkit.evaluate.report import ReportConfig, run

    cfg = config_from_args(ReportConfig, args, "report")
    cfg.run = cfg.run or args.run_dir or ""
    run(cfg)
    return 0
