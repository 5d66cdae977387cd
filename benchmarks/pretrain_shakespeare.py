"""Pretraining on tinyshakespeare: rlhfkit vs nanoGPT's documented CPU run, side by side in one run.

Both sides train on the same text (first 90% train, last 10% validation, as nanoGPT splits it) until their
validation loss first reaches `--target` bits/char (2.71 = nanoGPT's 1.88 nats/char after its 2,000 CPU
iterations), one after the other in this process's run, same threads and cores:

* rlhfkit: a 2,048-token BPE tokenizer trained on the training 90% only, the `tiny` model (0.8M
  parameters without embeddings, like nanoGPT's 4x128), batch 12 x 128 tokens, lr 3e-3 on a 400-step
  schedule (the fastest of a small sweep of batch, vocabulary and schedule, each timed the same way); the
  clock includes tokenizer training, tokenization and the stage's own evaluations.
* nanoGPT: `train.py config/train_shakespeare_char.py` with the README's CPU flags (`--device=cpu
  --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
  --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`), unmodified, in a subprocess; its
  clock includes its data loading, model init and its own evaluations (its char-level data preparation,
  a second, is not charged).

Both are timed by benchmarks/target_clock.py: after every optimizer step a hook checks the target every
`coarse` steps, and every `fine` steps once within 0.1 bits/char of it, with the clock stopped while it
evaluates. Both evaluate on the same characters: the first `--eval-chars` of the validation split, in
non-overlapping windows of each model's context (rlhfkit: `--seq-len` tokens, nats summed over the
predicted tokens / the characters they spell; nanoGPT: 64 chars, its mean loss), nats -> bits.
`speedup` = nanoGPT's seconds / rlhfkit's at `--target`; when nanoGPT's 2,000 iterations end above the
target on this slice, at the best bits/char nanoGPT reaches instead (`compared_at_bpc`). Also printed: the
CPU, tokens/s, MFU.

nanoGPT is not on PyPI; get its source once into a benchmark-only folder outside this repository:
    git clone https://github.com/karpathy/nanoGPT /path/to/nanoGPT
and pass `--nanogpt /path/to/nanoGPT` (its data/shakespeare_char is prepared from this repo's copy of
tinyshakespeare on first use). One command, prints JSON and writes docs/results/pretrain_shakespeare_<isa>.json:
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/pretrain_shakespeare.py --nanogpt /path/to/nanoGPT
AVX2-only emulation: prefix `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`
(MKL picks its GEMM kernels from CPUID by itself: without the third variable fp32 matmuls stay AVX-512).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cpu_info import cpu_info, isa_tag
from target_clock import TargetClock, TargetReached

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "tinyshakespeare" / "input.txt"
NANOGPT_CPU_FLAGS = [
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]


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


def held_out_text(args) -> str:
    """The first `--eval-chars` characters of the validation split (the last 10% of the text, as nanoGPT)."""
    text = Path(args.data).read_text(encoding="utf-8")
    return text[int(len(text) * 0.9) :][: args.eval_chars]


def held_out_bpc(args, tok_dir: Path):
    """Bits per character of `held_out_text` under an rlhfkit model: non-overlapping windows of `--seq-len`
    tokens; nats summed over every predicted token, divided by the characters those tokens spell (exact:
    each token's length in bytes, = characters on this ASCII text)."""
    from rlhfkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok_dir)
    ids = tokenizer(held_out_text(args), add_special_tokens=False)["input_ids"]
    lengths = torch.tensor([len(tokenizer.decode([i]).encode()) for i in ids])
    T = args.seq_len
    n = (len(ids) - 1) // T
    windows = torch.tensor(ids[: n * T + 1])
    x = torch.stack([windows[i * T : i * T + T] for i in range(n)])
    y = torch.stack([windows[i * T + 1 : i * T + T + 1] for i in range(n)])
    chars = int(torch.stack([lengths[i * T + 1 : i * T + T + 1] for i in range(n)]).sum())

    def evaluate(model) -> float:
        nats = 0.0
        for i in range(0, n, args.batch_size):
            logits = model(input_ids=x[i : i + args.batch_size]).logits
            nats += float(
                torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1), y[i : i + args.batch_size].flatten(), reduction="sum"
                )
            )
        return nats / chars / math.log(2)

    return evaluate


def run_rlhfkit(args, work: Path) -> dict:
    from rlhfkit.allocator import keep_freed_memory
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import train_tokenizer
    from rlhfkit.train import pretrain
    from rlhfkit.train.loop import LoopConfig

    keep_freed_memory()  # as the `rlhfkit` command does at start (the peer runs in its own process)

    history: list[dict] = []
    state: dict = {"steps": 0}

    def capture(model, *a, **kw):
        # The clock evaluates on the very characters nanoGPT's side is evaluated on (see held_out_bpc).
        state["clock"].evaluate = held_out_bpc(args, work / "tok")
        state["model"] = getattr(model, "module", model)
        return orig_loop(model, *a, **{**kw, "on_log": lambda row: history.append(row)})

    def after_step(optimizer, a, kw) -> None:
        state["steps"] += 1
        state["clock"].on_step(state["model"], state["steps"], last=state["steps"] == args.max_steps)

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
    clock = state["clock"] = TargetClock(args.target, None, args.coarse, args.fine)
    orig_loop = pretrain.train_loop
    pretrain.train_loop = capture
    hook = register_optimizer_step_post_hook(after_step)
    clock.start()
    try:
        # The tokenizer learns from the training 90% only, so no merge is fitted to validation text.
        text = Path(args.data).read_text(encoding="utf-8")
        (work / "train.txt").write_text(text[: int(len(text) * 0.9)], encoding="utf-8")
        train_tokenizer(str(work / "train.txt"), args.vocab_size, work / "tok")
        pretrain.run(cfg)
    except TargetReached:
        pass
    finally:
        pretrain.train_loop = orig_loop
        hook.remove()

    model = build_model(args.preset, args.vocab_size, args.seq_len)
    rates = [r["tok_per_s"] for r in history if "tok_per_s" in r][1:]  # first window includes warm-up
    tok_s = sorted(rates)[len(rates) // 2] if rates else float("nan")
    achieved = tok_s * flops_per_token(model, args.seq_len) / 1e9
    peak = matmul_peak_gflops()
    return {
        **clock.summary(),
        "tokens_per_s": round(tok_s),
        "chars_per_token": round(_chars_per_token(args.data, work / "tok"), 3),
        "model_gflops": round(achieved, 2),
        "matmul_peak_gflops": round(peak, 1),
        "mfu": round(achieved / peak, 4),
    }


def run_nanogpt(args, work: Path) -> dict:
    repo = Path(args.nanogpt).resolve()
    if not (repo / "train.py").is_file() or not (repo / "configurator.py").is_file():
        raise SystemExit(
            f"--nanogpt {repo}: not a nanoGPT checkout (no train.py/configurator.py); see --help"
        )
    data = repo / "data" / "shakespeare_char"
    if not (data / "val.bin").is_file():  # nanoGPT's own preparation, from our copy of the text (no download)
        if not (data / "input.txt").is_file():
            shutil.copy(args.data, data / "input.txt")
        subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, stdout=subprocess.DEVNULL)
    result = work / "nanogpt_result.json"
    probe = {"target": args.target, "coarse": args.nanogpt_coarse, "fine": args.nanogpt_fine, "margin": 0.1,
             "eval_chars": args.eval_chars, "result": str(result)}  # fmt: skip
    cmd = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        str(Path(__file__).parent / "nanogpt_probe.py"),
    ]
    cmd += [*NANOGPT_CPU_FLAGS, f"--out_dir={work / 'nanogpt_out'}"]
    env = {**os.environ, "RLHFKIT_NANOGPT_PROBE": json.dumps(probe)}
    with open(work / "nanogpt.log", "w") as log:
        proc = subprocess.run(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode or not result.is_file():
        tail = (work / "nanogpt.log").read_text()[-2000:]
        raise SystemExit(f"nanoGPT failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(result.read_text())
    out["command"] = "python " + " ".join(cmd[1:3] + cmd[4:-1])
    return out


def seconds_to(curve: list, bpc: float) -> float | None:
    return next((seconds for _, seconds, value in curve if value <= bpc), None)


def compare(ours: dict, peer: dict | None, target: float) -> dict:
    """`speedup` at `target`; when nanoGPT's run ends above it, at the best quality nanoGPT reaches instead
    (its full documented run), which rlhfkit's finely checked curve also passes on its way to the target."""
    if not peer:
        return {"speedup": None}
    quality = target if peer["reached_target"] else min(v for _, _, v in peer["curve"])
    ours_s, peer_s = seconds_to(ours["curve"], quality), seconds_to(peer["curve"], quality)
    return {
        "compared_at_bpc": quality,
        "rlhfkit_seconds": ours_s,
        "nanogpt_seconds": peer_s,
        "speedup": round(peer_s / ours_s, 2) if ours_s and peer_s else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--nanogpt", help="nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT)")
    ap.add_argument("--skip-nanogpt", action="store_true", help="rlhfkit's side only (no ratio)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--target", type=float, default=2.71, help="validation bits per char to reach")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=50, help="the stage's own (on-the-clock) evaluations")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--coarse", type=int, default=10, help="rlhfkit: steps between target checks")
    ap.add_argument("--fine", type=int, default=2, help="rlhfkit: ... once within 0.1 bits/char")
    ap.add_argument("--nanogpt-coarse", type=int, default=50)
    ap.add_argument("--nanogpt-fine", type=int, default=5)
    ap.add_argument(
        "--eval-chars", type=int, default=32768, help="held-out characters both sides are timed on"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON result file (default docs/results/pretrain_shakespeare_<isa>.json)")
    args = ap.parse_args()
    if not args.nanogpt and not args.skip_nanogpt:
        ap.error("--nanogpt DIR is required (or --skip-nanogpt); see --help for how to get it")

    work = Path(tempfile.mkdtemp(prefix="rlhfkit-bench-"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the stage's progress; stdout is the JSON only
            ours = run_rlhfkit(args, work)
        print(f"rlhfkit: {ours.get('seconds')} s to target", file=sys.stderr)
        peer = run_nanogpt(args, work) if args.nanogpt else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "benchmark": "pretrain_shakespeare",
        "cpu": cpu_info(),
        "target_bpc": args.target,
        **compare(ours, peer, args.target),
        "rlhfkit": ours,
        "nanogpt": peer,
        "config": vars(args),
    }
    text = json.dumps(summary)
    out = Path(args.out or ROOT / "docs" / "results" / f"pretrain_shakespeare_{isa_tag()}.json")
    if peer:  # a result file always holds both sides
        out.write_text(json.dumps(summary, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
