"""Weight-only int8 decoding (`--quantize int8`) against fp32 on a real model: speed and quality, one run.

    flock /work/cpu.lock .venv/bin/python benchmarks/int8_decode.py --model SMOLLM2_DIR [--threads 1]

Speed: greedy decoding of `--new-tokens` tokens (stop tokens off, so every run decodes the same count) at
batch 1 and at `--batch` rows, fp32 and int8 alternated `--repeats` times in the same process (the median
of each is reported, with the ratio); and as a rollout does (`rlhfkit grpo --generation-quantize`):
`--rollout-batch` rows from a model whose weights require grad, so that every call packs or quantizes its
weights afresh. Quality (`--skip-quality` leaves it out), on `--prompts` fixed chat prompts: the fp32 greedy
reply is fed to both decoders token by token (teacher forcing), and at every position we compare int8's most
likely token with fp32's (agreement) and the log-prob each gives the fp32 token (mean absolute difference);
also how many free-running int8 greedy replies equal fp32's token for token. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from cpu_info import cpu_info
from rlhfkit.generation import SamplingParams, generate, lean_llama, pad_id, render_chat
from rlhfkit.generation.loading import load_for_generation

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "Give me three tips for sleeping better.",
    "What is 17 times 23?",
    "Who wrote Pride and Prejudice?",
    "Describe a cat to someone who has never seen one.",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "What are the planets of the solar system?",
    "Suggest a name for a bakery.",
    "What is a prime number?",
    "Summarize the story of Cinderella.",
    "How does a bicycle work?",
    "What should I pack for a weekend hike?",
]


def decode_seconds(model, prompts: list[list[int]], new_tokens: int, quantize: str, pad: int) -> float:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)  # no stop ids: exactly new_tokens
    start = time.perf_counter()
    generate(model, prompts, params, pad_token_id=pad, batch_size=len(prompts), quantize=quantize)
    return time.perf_counter() - start


def forced_logits(model, prompt: list[int], forced: list[int], quantize: str) -> torch.Tensor:
    """Next-token logits at each position of `forced` fed after `prompt` ([len(forced), vocab])."""
    decoder = lean_llama.LeanLlama(model, 1, quantize)
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        rows = [decoder.prefill(ids, torch.ones_like(ids), len(forced))]
        for token in forced[:-1]:
            rows.append(decoder.step(torch.tensor([token])))
    return torch.cat(rows)


def quality(model, tokenizer, prompts: list[list[int]], new_tokens: int, pad: int) -> dict:
    stops = SamplingParams(max_new_tokens=new_tokens, temperature=0, stop_token_ids=(tokenizer.eos_token_id,))
    exact = generate(model, prompts, stops, pad_token_id=pad, batch_size=1)
    int8 = generate(model, prompts, stops, pad_token_id=pad, batch_size=1, quantize="int8")
    agree, positions, logprob_gaps = 0, 0, []
    for prompt, reply in zip(prompts, exact):
        a = forced_logits(model, prompt, reply.token_ids, "none")
        b = forced_logits(model, prompt, reply.token_ids, "int8")
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        positions += len(reply.token_ids)
        chosen = torch.tensor(reply.token_ids)[:, None]
        gap = torch.log_softmax(b, -1).gather(-1, chosen) - torch.log_softmax(a, -1).gather(-1, chosen)
        logprob_gaps += gap[:, 0].tolist()
    same = sum(e.token_ids == q.token_ids for e, q in zip(exact, int8))
    return {
        "prompts": len(prompts),
        "positions": positions,
        "teacher_forced_top1_agreement": round(agree / positions, 4),
        "mean_abs_logprob_diff_of_fp32_token": round(statistics.fmean(abs(g) for g in logprob_gaps), 4),
        "mean_logprob_diff_of_fp32_token": round(statistics.fmean(logprob_gaps), 4),
        "free_running_greedy_identical_replies": f"{same}/{len(prompts)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--rollout-batch", type=int, default=64, help="rows of the rollout case; 0: skip it")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_for_generation(args.model, device="cpu", dtype="float32")
    model.requires_grad_(False)
    pad = pad_id(tokenizer)
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS[: args.prompts]]
    prompts = [tokenizer(render_chat(tokenizer, c), add_special_tokens=False)["input_ids"] for c in chats]

    speed = {}
    cases = [(f"batch_{rows}", rows) for rows in (1, args.batch)]
    cases += [(f"rollout_{args.rollout_batch}", args.rollout_batch)] if args.rollout_batch else []
    for name, rows in cases:
        model.requires_grad_(name.startswith("rollout"))  # a policy in training: no packing is kept
        batch = (prompts * rows)[:rows]
        times: dict[str, list[float]] = {"none": [], "int8": []}
        for mode in times:  # warm up: packing and quantizing the weights happen on the first call
            decode_seconds(model, batch, 2, mode, pad)
        for _ in range(args.repeats):
            for mode in times:
                times[mode].append(decode_seconds(model, batch, args.new_tokens, mode, pad))
        rate = {mode: rows * args.new_tokens / statistics.median(t) for mode, t in times.items()}
        speed[name] = {
            "fp32_tokens_per_s": round(rate["none"], 1),
            "int8_tokens_per_s": round(rate["int8"], 1),
            "int8_over_fp32": round(rate["int8"] / rate["none"], 2),
            "seconds": {mode: [round(x, 3) for x in t] for mode, t in times.items()},
        }
    model.requires_grad_(False)
    print(
        json.dumps(
            {
                "benchmark": "int8_decode",
                "cpu": cpu_info(),
                "load_average_before": os.getloadavg(),
                "model": args.model,
                "parameters": sum(p.numel() for p in model.parameters()),
                "new_tokens": args.new_tokens,
                "speed": speed,
                "quality": None
                if args.skip_quality
                else quality(model, tokenizer, prompts, args.new_tokens, pad),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
