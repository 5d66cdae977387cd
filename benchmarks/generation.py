"""Generation throughput: rlhfkit's engine vs `transformers` `generate` on the same `small` model.

    .venv/bin/python benchmarks/generation.py [--batch-sizes 1 16 64] [--new-tokens 64] [--repeats 3] [--threads N]

One command (prints JSON, writes docs/results/generation_benchmark_<isa>.json; AVX2-only emulation: prefix
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2`;
the last one because the lean engine's attention runs in fbgemm, which picks its kernels from CPUID):

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/generation.py --batch-sizes 64

Random weights (the speed of a forward does not depend on their values), prompts of ~32 random tokens,
greedy decoding, and no stop tokens on either side, so both produce exactly `--new-tokens` per row. Each
measurement is the best of `--repeats` runs (the CPU is shared; the best run is the least disturbed one).
Also checks that both produced the same tokens. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cpu_info import cpu_info, isa_tag
from rlhfkit.generation import SamplingParams, generate
from rlhfkit.models import build_model, count_parameters

VOCAB = 4096
PROMPT_LEN = 32
ROOT = Path(__file__).resolve().parent.parent


def best_seconds(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def hf_generate(model, prompts: torch.Tensor, new_tokens: int, do_sample: bool = False) -> list[list[int]]:
    with torch.inference_mode():
        out = model.generate(
            input_ids=prompts.to(model.device),
            attention_mask=torch.ones_like(prompts, device=model.device),
            do_sample=do_sample,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
    return out[:, prompts.shape[1] :].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (benchmarks/gpu_check.py runs it on a GPU)"
    )
    parser.add_argument(
        "--out", help="JSON result file (default docs/results/generation_benchmark_<isa>.json)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.preset, VOCAB, max_seq_len=512, seed=0).eval().to(args.device)
    model.generation_config.eos_token_id = None  # no early stops: exactly --new-tokens for both engines
    model.generation_config.top_k = None  # plain sampling on the transformers side too
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(PROMPT_LEN - 4, PROMPT_LEN + 5, (max(args.batch_sizes),), generator=gen)
    greedy = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    sample = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)

    results = []
    for batch in args.batch_sizes:
        # transformers needs one rectangular batch: equal-length prompts keep its path free of padding.
        prompts = torch.randint(10, VOCAB, (batch, PROMPT_LEN), generator=gen)
        tokens = batch * args.new_tokens
        hf_s, hf_out = best_seconds(lambda p=prompts: hf_generate(model, p, args.new_tokens), args.repeats)
        ours_s, ours_out = best_seconds(
            lambda p=prompts: generate(model, p.tolist(), greedy, pad_token_id=0), args.repeats
        )
        hf_sample_s, _ = best_seconds(
            lambda p=prompts: hf_generate(model, p, args.new_tokens, do_sample=True), args.repeats
        )
        ours_sample_s, _ = best_seconds(
            lambda p=prompts: generate(model, p.tolist(), sample, pad_token_id=0), args.repeats
        )
        ragged = [torch.randint(10, VOCAB, (int(n),), generator=gen).tolist() for n in lengths[:batch]]
        ragged_s, _ = best_seconds(lambda r=ragged: generate(model, r, greedy, pad_token_id=0), args.repeats)
        results.append(
            {
                "batch_size": batch,
                "transformers_greedy_tokens_per_s": round(tokens / hf_s, 1),
                "rlhfkit_greedy_tokens_per_s": round(tokens / ours_s, 1),
                "greedy_speedup": round(hf_s / ours_s, 2),
                "greedy_outputs_identical": [c.token_ids for c in ours_out] == hf_out,
                "transformers_sample_tokens_per_s": round(tokens / hf_sample_s, 1),
                "rlhfkit_sample_tokens_per_s": round(tokens / ours_sample_s, 1),
                "sample_speedup": round(hf_sample_s / ours_sample_s, 2),
                "rlhfkit_greedy_ragged_prompts_tokens_per_s": round(tokens / ragged_s, 1),
            }
        )
    summary = {
        "benchmark": "generation",
        "model": f"{args.preset} ({count_parameters(model):,} params, vocab {VOCAB}, fp32)",
        "prompt_tokens": PROMPT_LEN,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cpu": cpu_info(),
        "results": results,
    }
    out = Path(args.out or ROOT / "docs" / "results" / f"generation_benchmark_{isa_tag()}.json")
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
