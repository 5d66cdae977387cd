"""The weight gradient's product on a CPU: oneDNN over transposed copies (before 2026-12-06) against MKL's `mm`
reading its operands transposed in place (`train.fast_linear.mm_tn`, now), per product and in a training step.

    PYTHONPATH=benchmarks python benchmarks/weight_grad.py [--threads 1 2] [--steps 6]

- `products`: `dW = dY^T @ X` for the demo's `tiny` model's shapes at pipeline pretraining's 8,192 tokens per
  step (32 x 256) and at a PPO minibatch's 1,046, both ways, best of 7 calls each.
- `step`: one pretraining optimizer step of the pipeline's shape (`tiny`, 4,096-token vocabulary, 32 x 256
  tokens, AdamW, clipping) with either product, in alternating rounds (the machine's drift falls on both),
  each way's best round of `--steps` steps.

Only the order of the fp32 sums differs between the two ways. It matters only where oneDNN is rlhfkit's fp32
library (`fast_linear.usable`: not on Intel CPUs, where MKL does every product already). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cpu_info import cpu_info
from rlhfkit.models import build_model
from rlhfkit.train import fast_linear
from rlhfkit.train.loop import LoopConfig, lm_loss, make_optimizer

# (out, in) of the tiny model's products: the LM head, fused gate/up, fused q/k/v, down, o.
SHAPES = [(4096, 128), (704, 128), (384, 128), (128, 352), (128, 128)]


def onednn_over_copies(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a.T @ b the old way: both operands copied transposed for oneDNN's inner product."""
    return fast_linear.mm_t(a.t(), b.t())


def best_ms(fn, *args, calls: int = 7) -> float:
    fn(*args)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return round(min(times) * 1e3, 2)


def products(threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for tokens in (8192, 1046):
        for out, inn in SHAPES:
            grad, x = torch.randn(tokens, out, generator=gen), torch.randn(tokens, inn, generator=gen)
            old = best_ms(onednn_over_copies, grad, x)
            new = best_ms(fast_linear.mm_tn, grad, x)
            rows.append({"threads": threads, "tokens": tokens, "out": out, "in": inn, "onednn_copies_ms": old,
                         "mkl_mm_ms": new, "speedup": round(old / new, 2)})  # fmt: skip
    return rows


def step_seconds(steps: int, rounds: int = 4) -> dict:
    torch.set_num_threads(2)
    model = build_model("tiny", 4096, 512, seed=0)
    opt = make_optimizer(model, LoopConfig(lr=3e-3, weight_decay=0.1))
    x = torch.randint(0, 4096, (32, 257), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": x[:, :-1], "labels": x[:, 1:], "count": x[:, 1:].numel()}

    def step() -> None:
        loss, n, _ = lm_loss(model, batch)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    ways = {"onednn_copies": onednn_over_copies, "mkl_mm": fast_linear.mm_tn}
    best = dict.fromkeys(ways, float("inf"))
    real = fast_linear.mm_tn
    try:
        for round_index in range(rounds):
            order = list(ways) if round_index % 2 == 0 else list(ways)[::-1]
            for name in order:
                fast_linear.mm_tn = ways[name]
                step()  # warm-up: the first step after a switch allocates
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                best[name] = min(best[name], (time.perf_counter() - start) / steps)
    finally:
        fast_linear.mm_tn = real
    return {
        "seconds_per_step": {k: round(v, 3) for k, v in best.items()},
        "speedup": round(best["onednn_copies"] / best["mkl_mm"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    result = {
        "benchmark": "weight_grad",
        "cpu": cpu_info(),
        "onednn_is_the_fp32_library_here": fast_linear.usable(),
        "products": [row for t in args.threads for row in products(t)],
        "pretrain_step_tiny_32x256": step_seconds(args.steps),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
