"""`rlhfkit pipeline`: parse the flags, run the stages (`runner.run_pipeline`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.pipeline.stages import ALL_STAGE_NAMES

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
        help="policy optimization after SFT: rs (default: rejection sampling, the RM's best of 8 fine-tuned on), "
        "ppo, dpo, rloo, grpo, online, hybrid, or grpo-verifier (RLVR); a comma-separated list (rs,ppo,dpo) "
        "runs each from the same SFT model and labels and evaluates them side by side",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed for every stage (default: each stage's own, 0)"
    )
    p.set_defaults(func=_pipeline)


def _pipeline(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_toml
    from rlhfkit.pipeline.runner import run_pipeline

    config = load_toml(args.config) if args.config else {}
    if args.seed is not None:
        config["seed"] = args.seed
    record = run_pipeline(
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
        f"pipeline: finished in {record.total_seconds or 0:.0f} s of stage time; see {args.out}/pipeline.json"
    )
    return 0
