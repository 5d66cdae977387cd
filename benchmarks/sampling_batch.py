"""How many rows to decode together: a demo run's SFT model sampling as rejection sampling does, per batch size.

    PYTHONPATH=benchmarks python benchmarks/sampling_batch.py --run runs/demo [--prompts 250] [--batch-sizes 32 64 256]

Samples 8 answers to each of the first `--prompts` training prompts (temperature 0.7, up to 128 new tokens,
stopping at the end of the turn: the `rs` stage's settings) once per batch size, in rounds that alternate the
order, and keeps each size's best round. Real stops make the rows ragged, which is what a batch size trades
against: more rows share each step's fixed work, and more rows wait for the batch's longest answer. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cpu_info import cpu_info
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.generation import SamplingParams, generate_chat
from rlhfkit.models import load_causal_lm
from rlhfkit.tokenizer import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run", required=True, help="a demo pipeline run folder (its sft/ and world/prompts.jsonl)"
    )
    ap.add_argument("--prompts", type=int, default=250)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    run = Path(args.run)
    model = load_causal_lm(run / "sft").eval()
    tokenizer = load_tokenizer(run / "sft")
    records = [r for _, r in read_jsonl(run / "world" / "prompts.jsonl")][: args.prompts]
    chats = [r["messages"] for r in records for _ in range(8)]
    params = SamplingParams(max_new_tokens=128, temperature=0.7, seed=0)
    best: dict[int, dict] = {}
    for round_index in range(args.rounds):
        sizes = args.batch_sizes if round_index % 2 == 0 else args.batch_sizes[::-1]
        for size in sizes:
            start = time.perf_counter()
            completions = generate_chat(model, tokenizer, chats, params, batch_size=size)
            seconds = time.perf_counter() - start
            tokens = sum(len(c.token_ids) for c in completions)
            if size not in best or seconds < best[size]["seconds"]:
                best[size] = {
                    "seconds": round(seconds, 2),
                    "tokens": tokens,
                    "tokens_per_s": round(tokens / seconds),
                }
    baseline = best[args.batch_sizes[0]]["tokens_per_s"]
    rows = [
        {"batch_size": s, **best[s], "vs_first": round(best[s]["tokens_per_s"] / baseline, 2)}
        for s in sorted(best)
    ]
    result = {
        "benchmark": "sampling_batch",
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "model": str(run / "sft"),
        "sequences": len(chats),
        "rows": rows,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
