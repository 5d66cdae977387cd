"""What weight-only int8 decoding (`--quantize int8`) costs in answer quality, by the demo world's gold judge.

    flock /work/cpu.lock .venv/bin/python benchmarks/int8_gold.py --run runs/demo [--model rs] [--seeds 0,1,2]

Issue 30 asks for the quality cost of int8 as a gold score or a judge's win rate against fp32, not only as
token agreement. A pipeline run's model (`--model`, a folder of `--run`) answers the run's held-out evaluation
prompts (`world/eval_prompts.jsonl`) as `rlhfkit evaluate` samples them (temperature 0.7, 128 tokens),
three ways per seed:

- fp32 with the seed;
- int8 with the same seed (the same random numbers: where int8's probabilities equal fp32's, the same tokens);
- fp32 with another seed (seed + 1000): the noise a second fp32 sample brings, the yardstick for "within the
  noise of fp32".

The gold judge scores every answer. Per seed: mean gold of each, and two paired win rates over the prompts
(ties half): int8 against fp32, and fp32 (other seed) against fp32. Also greedy decoding (temperature 0),
where fp32 is deterministic: the share of answers int8 leaves unchanged, and both mean golds. Prints one JSON
object (and writes it to `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from cpu_info import cpu_info
from rlhfkit.data.chats import load_prompts
from rlhfkit.generation import SamplingParams
from rlhfkit.generation.loading import load_for_generation
from rlhfkit.generation.text import generate_chat
from rlhfkit.world.judge import score


def answers(model, tokenizer, chats, params, quantize: str, batch_size: int) -> list[str]:
    return [
        c.text
        for c in generate_chat(model, tokenizer, chats, params, batch_size=batch_size, quantize=quantize)
    ]


def gold(records: list[dict], texts: list[str]) -> list[float]:
    return [score(r["messages"], t, r.get("meta")).total for r, t in zip(records, texts)]


def win_rate(a: list[float], b: list[float]) -> float:
    """Share of prompts where `a`'s answer scores above `b`'s (ties half)."""
    return sum((x > y) + 0.5 * (x == y) for x, y in zip(a, b)) / len(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a pipeline run folder (with world/ and the model)")
    parser.add_argument("--model", default="rs", help="the model folder inside --run (default rs)")
    parser.add_argument("--prompts", default=None, help="default: RUN/world/eval_prompts.jsonl")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    records = list(load_prompts(args.prompts or run / "world" / "eval_prompts.jsonl"))
    chats = [r["messages"] for r in records]
    model, tokenizer = load_for_generation(run / args.model, device="cpu", dtype="float32")
    model.requires_grad_(False)

    def sample(seed: int, quantize: str, temperature: float) -> list[str]:
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=temperature, top_p=1.0, seed=seed
        )
        return answers(model, tokenizer, chats, params, quantize, args.batch_size)

    per_seed = []
    for seed in (int(s) for s in args.seeds.split(",")):
        fp32, int8, other = (
            gold(records, sample(seed, "none", args.temperature)),
            gold(records, sample(seed, "int8", args.temperature)),
            gold(records, sample(seed + 1000, "none", args.temperature)),
        )
        row = {
            "seed": seed,
            "mean_gold": {
                "fp32": statistics.fmean(fp32),
                "int8": statistics.fmean(int8),
                "fp32_other_seed": statistics.fmean(other),
            },
            "int8_vs_fp32_win": win_rate(int8, fp32),
            "fp32_other_seed_vs_fp32_win": win_rate(other, fp32),
        }
        per_seed.append(row)
        print(json.dumps(row), flush=True)
    greedy_fp32 = sample(0, "none", 0.0)
    greedy_int8 = sample(0, "int8", 0.0)
    g32, g8 = gold(records, greedy_fp32), gold(records, greedy_int8)
    result = {
        "benchmark": "int8_gold",
        "cpu": cpu_info(),
        "load_average_before": os.getloadavg(),
        "run": str(run),
        "model": args.model,
        "prompts": len(records),
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "per_seed": per_seed,
        "mean": {
            "gold_fp32": statistics.fmean(r["mean_gold"]["fp32"] for r in per_seed),
            "gold_int8": statistics.fmean(r["mean_gold"]["int8"] for r in per_seed),
            "int8_vs_fp32_win": statistics.fmean(r["int8_vs_fp32_win"] for r in per_seed),
            "fp32_other_seed_vs_fp32_win": statistics.fmean(
                r["fp32_other_seed_vs_fp32_win"] for r in per_seed
            ),
        },
        "greedy": {
            "identical_answers": sum(a == b for a, b in zip(greedy_fp32, greedy_int8)) / len(records),
            "mean_gold_fp32": statistics.fmean(g32),
            "mean_gold_int8": statistics.fmean(g8),
            "int8_vs_fp32_win": win_rate(g8, g32),
        },
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
