"""`rlhfkit reward train|judge|select|eval|score` (Stage 3b): parse the flags, call `reward.train.run`,
`reward.judge.run`, `reward.select.run` or the scorer."""

from __future__ import annotations

import argparse
import json

from rlhfkit.config import add_command_group, add_config_command


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.reward.train import RewardConfig, run

    rsub = add_command_group(sub, "reward", metavar="COMMAND", help="train, evaluate and apply reward models")
    add_config_command(
        rsub,
        "train",
        RewardConfig,
        run,
        section="reward",
        done="reward: reward model written to {out}",
        help="train a reward model on comparisons (resumes from its last checkpoint)",
        description="Bradley-Terry training of a scalar head on any Hugging Face backbone. Rankings of K "
        "responses count as one batch element holding all C(K,2) pairs. Re-running the same command after a "
        "crash continues from the last checkpoint in --out.",
    )

    from rlhfkit.reward.judge import JudgeConfig
    from rlhfkit.reward.judge import run as build_judge

    add_config_command(
        rsub,
        "judge",
        JudgeConfig,
        build_judge,
        help="build an evaluation-only judge: a reward model on another backbone and half of HH-RLHF",
        description="Train an independent judge for `rlhfkit evaluate --judge reward:OUT`: all-MiniLM-L6-v2 "
        "(bundled, offline) with a reward head, on the half of the comparisons whose first user "
        "message hashes even; the other half gives its held-out accuracy (judge.json) and the evaluation "
        "prompts (OUT/eval_prompts.jsonl). Policy training (ppo, grpo, rloo, rs, online, best-of-n) refuses "
        "the folder.",
    )

    from rlhfkit.reward.select import SelectConfig
    from rlhfkit.reward.select import run as select

    add_config_command(
        rsub,
        "select",
        SelectConfig,
        select,
        help="choose the candidate sets to label: those the reward model is least sure how to rank",
        description="Active selection: score every completion of a pool of candidate sets with the reward model "
        "and keep the --count sets whose Bradley-Terry pair preferences are nearest a coin flip (mean binary "
        "entropy); with --by posterior, those least like its training labels; with several models (--model A,B), "
        "the sets they disagree on most. Label the output as any candidates file (`rlhfkit label`, `rlhfkit "
        "annotate campaign create`). On the demo world none beat random labels (docs/methods.md).",
    )

    ev = rsub.add_parser("eval", help="accuracy, calibration and score distributions on comparisons (JSON)")
    ev.add_argument(
        "--model", required=True, help="reward model folder (or a LoRA reward model's adapter folder)"
    )
    ev.add_argument("--data", required=True, help="comparisons JSONL")
    ev.add_argument("--out", help="also write the JSON report to this file")
    _scoring_args(ev)
    ev.set_defaults(func=_eval)

    score = rsub.add_parser(
        "score",
        help="add reward scores to each line of a JSONL file",
        description="Chats (last message the assistant's) and prompt/completion records get 'reward'; candidates "
        "and rankings ('completions') get 'rewards', one per completion; pairs get 'reward_chosen' and "
        "'reward_rejected'.",
    )
    score.add_argument(
        "--model", required=True, help="reward model folder (or a LoRA reward model's adapter folder)"
    )
    score.add_argument("--in", dest="input", required=True, help="input JSONL")
    score.add_argument("--out", required=True, help="output JSONL")
    _scoring_args(score)
    score.set_defaults(func=_score)


def _scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-length", type=int, help="tokens per conversation (default: the model's training value)"
    )
    p.add_argument("--batch-size", type=int, default=16, help="conversations per forward pass (default: 16)")
    from rlhfkit.device import DEVICE_HELP, DTYPE_HELP

    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--dtype", default="auto", help=f"weights' dtype: {DTYPE_HELP} (default: auto)")


def _load(args):
    from rlhfkit.device import pick_device, pick_dtype
    from rlhfkit.reward.model import load_scorer

    device = pick_device(args.device)
    return load_scorer(args.model, device, args.max_length, dtype=pick_dtype(args.dtype, device))


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlhfkit.data.comparisons import load_comparisons
    from rlhfkit.reward.evaluate import evaluate_reward_model

    groups = load_comparisons(args.data)
    model, tokenizer, max_length = _load(args)
    report = evaluate_reward_model(model, tokenizer, groups, max_length, args.batch_size)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _score(args: argparse.Namespace) -> int:
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.data.responses import record_responses
    from rlhfkit.data.sources import record_source
    from rlhfkit.reward.model import score_conversations

    records, items, keys = [], [], []
    source = record_source(args.input)
    for line, rec in source:
        its, ks = record_responses(rec, source, line)
        records.append(rec)
        items.extend(its)
        keys.append(ks)
    model, tokenizer, max_length = _load(args)
    scores = iter(
        score_conversations(model, tokenizer, items, max_length, args.batch_size, progress="reward score")
    )
    for rec, ks in zip(records, keys):
        for key in ks:
            value = next(scores)
            if key == "rewards":
                rec.setdefault("rewards", []).append(value)
            else:
                rec[key] = value
    n = write_jsonl(args.out, records)
    print(f"reward: scored {len(items)} responses in {n} records -> {args.out}")
    return 0
