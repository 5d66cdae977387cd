"""Pretraining benchmark on tinyshakespeare: time to nanoGPT's CPU anchor, throughput and MFU.

nanoGPT's `shakespeare_char` CPU run reaches a validation loss of 1.88 nats/char (= 2.71 bits/char) after
2,000 iterations. This script trains rlhfkit's tokenizer and model on the same text (first 90% train, last
10% validation, as nanoGPT splits it), and measures, all in one wall clock that includes tokenizer training,
tokenization and every evaluation:

* `seconds_to_target`: wall seconds until validation bits per byte (= bits per char: the text is ASCII)
  first reaches `--target` (2.71),
* `tokens_per_s` of training, final `val_bpc`,
* `mfu`: achieved model FLOP/s over the fp32 matmul peak of this machine, measured in the same run.

Prints one JSON object. Usage: `python benchmarks/pretrain_shakespeare.py [--max-steps N] [--preset P] ...`
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "tinyshakespeare" / "input.txt"


def matmul_peak_gflops(n: int = 1024, seconds: float = 2.0) -> float:
    """Best sustained fp32 GEMM rate (all threads), the denominator of MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        dt = time.perf_counter() - t0
        best = max(best, 5 * 2 * n**3 / dt / 1e9)
    return best


def flops_per_token(model, seq_len: int) -> float:
    """6 x (matmul parameters incl. the LM head) + attention (12 * layers * d * T), per trained token."""
    cfg = model.config
    d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    body = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    head = V * d  # tied: the LM head reuses the embedding, but its matmul still costs V*d per token
    return 6 * (body + head) + 12 * L * d * seq_len


def _chars_per_token(data: str, tok_dir: Path) -> float:
    from rlhfkit.tokenizer import load_tokenizer

    text = Path(data).read_text(encoding="utf-8")
    return len(text) / len(load_tokenizer(tok_dir)(text, add_special_tokens=False)["input_ids"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--target", type=float, default=2.71, help="validation bits per char to reach")
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--stop-at-target", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from rlhfkit.tokenizer import train_tokenizer
    from rlhfkit.train import pretrain
    from rlhfkit.train.loop import LoopConfig

    peak = matmul_peak_gflops()
    work = Path(tempfile.mkdtemp(prefix="rlhfkit-bench-"))
    t0 = time.perf_counter()
    train_tokenizer(args.data, args.vocab_size, work / "tok")
    reached: dict = {}
    history: list[dict] = []

    class ReachedTarget(Exception):
        pass

    def on_log(row: dict) -> None:
        history.append({k: v for k, v in row.items() if k != "samples"})
        if "val_bpb" in row and row["val_bpb"] <= args.target and not reached:
            reached.update(seconds=time.perf_counter() - t0, step=row["step"], val_bpc=row["val_bpb"])
            if args.stop_at_target:
                raise ReachedTarget

    cfg = pretrain.PretrainConfig(
        data=args.data,
        tokenizer=str(work / "tok"),
        out=str(work / "base"),
        preset=args.preset,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        micro_batch_size=args.batch_size,
        eval_tokens=args.eval_tokens,
        sample_prompts=["ROMEO:"],
        sample_tokens=1,
        loop=LoopConfig(
            max_steps=args.max_steps, lr=args.lr, warmup_steps=args.warmup_steps, eval_every=args.eval_every,
            save_every=10**9, log_every=10, seed=args.seed, weight_decay=0.1,
        ),
    )  # fmt: skip
    orig_loop = pretrain.train_loop
    pretrain.train_loop = lambda *a, **kw: orig_loop(*a, **{**kw, "on_log": on_log})
    try:
        pretrain.run(cfg)
    except ReachedTarget:
        pass
    finally:
        pretrain.train_loop = orig_loop
    wall = time.perf_counter() - t0

    from rlhfkit.models import build_model

    model = build_model(args.preset, args.vocab_size, args.seq_len)
    rates = [r["tok_per_s"] for r in history if "tok_per_s" in r][1:]  # first window includes warm-up
    tok_s = sorted(rates)[len(rates) // 2] if rates else float("nan")
    achieved = tok_s * flops_per_token(model, args.seq_len) / 1e9
    evals = [r for r in history if "val_bpb" in r]
    summary = json.dumps(
        {
            "benchmark": "pretrain_shakespeare",
            "target_bpc": args.target,
            "reached_target": bool(reached),
            "seconds_to_target": round(reached["seconds"], 1) if reached else None,
            "step_at_target": reached.get("step"),
            "final_val_bpc": round(evals[-1]["val_bpb"], 4) if evals else None,
            "wall_seconds": round(wall, 1),
            "tokens_per_s": round(tok_s),
            "chars_per_token": round(_chars_per_token(args.data, work / "tok"), 3),
            "model_gflops": round(achieved, 2),
            "matmul_peak_gflops": round(peak, 1),
            "mfu": round(achieved / peak, 4),
            "config": vars(args),
            "threads": torch.get_num_threads(),
            "eval_curve": [(r["step"], round(r["val_bpb"], 3)) for r in evals],
        }
    )
    shutil.rmtree(work, ignore_errors=True)
    print(summary)


if __name__ == "__main__":
    main()
