"""Where the time goes, per workload, on this CPU/ISA: torch.profiler's top operators by self CPU time.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/profile_hot_paths.py [--top 8]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ...
    (AVX2-only emulation)

Workloads (random weights: the time of an op does not depend on the values):
- `pretrain_step`: one optimizer step of the benchmark's `tiny` model (batch 16 x 128 tokens, AdamW, clipping);
- `generate_batch64`: rlhfkit's engine sampling 64 tokens for 64 prompts on the `small` model;
- `decode_step_135m`: batch-1 decode steps of a SmolLM2-135M-shaped Llama (30 layers, d 576, GQA 9/3,
  vocab 49152) on the lean engine, fp32.
Prints JSON (and writes docs/results/profile_hot_paths_<isa>.json): for each, the mean wall milliseconds per unit and the top operators' share of self CPU time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from cpu_info import cpu_info, isa_tag
from rlhfkit.generation import SamplingParams, generate, lean_llama
from rlhfkit.models import build_model
from rlhfkit.train.loop import LoopConfig, lm_loss, make_optimizer


def pretrain_step():
    model = build_model("tiny", 512, 512, seed=0)
    opt = make_optimizer(model, LoopConfig(lr=3e-3, weight_decay=0.1))
    x = torch.randint(0, 512, (16, 129), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": x[:, :-1], "labels": x[:, 1:], "count": x[:, 1:].numel()}

    def step():
        loss, n, _ = lm_loss(model, batch)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def generate_batch64():
    model = build_model("small", 4096, max_seq_len=512, seed=0).eval()
    prompts = torch.randint(10, 4096, (64, 32), generator=torch.Generator().manual_seed(0)).tolist()
    params = SamplingParams(max_new_tokens=64, temperature=1.0, seed=0)
    return lambda: generate(model, prompts, params, pad_token_id=0)


def decode_step_135m():
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    decoder = lean_llama.LeanLlama(model, 1)
    ids = torch.randint(0, 49152, (1, 40))
    with torch.inference_mode():
        decoder.prefill(ids, torch.ones_like(ids), 256)
    token = torch.tensor([5])

    def step():
        with torch.inference_mode():
            decoder.step(token)

    return step


WORKLOADS = {"pretrain_step": (pretrain_step, 5), "generate_batch64": (generate_batch64, 1),
             "decode_step_135m": (decode_step_135m, 20)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--only", nargs="*", choices=list(WORKLOADS), help="a subset of the workloads")
    ap.add_argument("--out", help="JSON result file (default docs/results/profile_hot_paths_<isa>.json)")
    args = ap.parse_args()
    out = {"benchmark": "profile_hot_paths", "cpu": cpu_info(), "workloads": {}}
    for name in args.only or WORKLOADS:
        build, n = WORKLOADS[name]
        fn = build()
        for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
            fn()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                fn()
        wall = (time.perf_counter() - t0) / n
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        out["workloads"][name] = {
            "ms_per_unit_profiled": round(wall * 1000, 1),
            "top_ops": [(e.key, round(e.self_cpu_time_total / total, 3)) for e in events[: args.top]],
        }
    path = Path(
        args.out
        or Path(__file__).resolve().parent.parent / "docs" / "results" / f"profile_hot_paths_{isa_tag()}.json"
    )
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
