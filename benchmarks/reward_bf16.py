"""A reward model's training step and scoring, fp32 against the CPU bf16 autocast `--dtype auto` picks on a
CPU with native bf16 matmuls (`train/precision.py`, `Precision.scorer_bf16`). Prints JSON.

    python benchmarks/reward_bf16.py                      # the bundled MiniLM, the pipeline's reward model
    python benchmarks/reward_bf16.py --model runs/demo/sft

Both sides run the same model on the same random batch through `reward.model.forward_scores`, interleaved, and
the best of `--repeats` is kept; the training step runs as `reward train` runs it: training mode with dropout
off (`train/dropout.py`) and, under the bf16 autocast, the unfused attention kernel
(`reward.train.cpu_training_attention`); `--dropout` keeps the backbone's dropout, as before 2026-12-06. The two
sides' largest score difference when scoring says what the autocast costs in accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch

from cpu_info import cpu_info
from rlhfkit.reward.backbones import resolve_backbone
from rlhfkit.reward.model import forward_scores, load_reward_model
from rlhfkit.reward.train import cpu_training_attention, freeze_lower_layers
from rlhfkit.train.dropout import disable_dropout


def timed(model, batch: dict, bf16: bool, train: bool) -> tuple[float, torch.Tensor]:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    attention = cpu_training_attention(torch.device("cpu"), bf16) if train else nullcontext
    start = time.perf_counter()
    with autocast, attention(), torch.set_grad_enabled(train):
        scores = forward_scores(model, batch).float()
    if train:
        scores.sum().backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, scores.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm", help="reward-model backbone: minilm or a model folder")
    ap.add_argument("--freeze-layers", type=int, default=2, help="as the pipeline's [reward]")
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--tokens", type=int, default=120, help="tokens per sequence")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--dropout", action="store_true", help="keep the backbone's dropout while training")
    args = ap.parse_args()

    torch.manual_seed(0)
    model, _ = load_reward_model(resolve_backbone(args.model), "cpu", new_head=True)
    freeze_lower_layers(model, args.freeze_layers)
    if not args.dropout:
        disable_dropout(model)
    ids = torch.randint(5, min(20_000, model.config.vocab_size), (args.batch, args.tokens))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    result = {"model": args.model, "batch": args.batch, "tokens": args.tokens, "dropout": args.dropout}
    result["cpu"] = cpu_info()
    for phase, train in (("train_step", True), ("scoring", False)):
        model.train(train)
        seconds: dict[bool, list[float]] = {False: [], True: []}
        scores = {}
        for rep in range(args.repeats + 1):  # the first round warms both sides up
            for bf16 in (False, True):
                took, scores[bf16] = timed(model, batch, bf16, train)
                if rep:
                    seconds[bf16].append(took)
        fp32, bf16 = min(seconds[False]), min(seconds[True])
        result[phase] = {
            "fp32_s": round(fp32, 4),
            "bf16_autocast_s": round(bf16, 4),
            "speedup": round(fp32 / bf16, 2),
        }
        if not train:  # with --dropout each side draws other masks in training, so only scoring compares
            result[phase]["max_score_difference"] = float((scores[True] - scores[False]).abs().max())
            result[phase]["score_std"] = float(scores[False].std())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
