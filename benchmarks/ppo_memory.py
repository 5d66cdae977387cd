"""Peak memory and time of one PPO step (rollout + update) on a randomly initialised ~0.5B Qwen2-shaped model.

The model has Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, tied
embeddings, its full 151,936-token vocabulary; the tokenizer is a small rlhfkit BPE, so only its ids are
sampled from the prompts, but the embedding, LM head and logits have the real size). A policy folder and a
reward model folder are written once; then `rlhfkit ppo` runs one step in a fresh process, whose peak RSS
(`os.wait4`'s resource usage of that child) is reported:

- `lora`: `--lora-r 16 --gradient-checkpointing`, critic from the reward model with LoRA too (the default),
  reference = the policy with adapters disabled. Held in memory: policy base, critic base, reward model
  (three fp32 copies of the weights) plus adapters, their AdamW state and activations.
- `bf16` (`--bf16`): the same with `--dtype bfloat16`: the three frozen bases in bf16 (no autocast on a CPU).
- `full` (estimated, not run by default: it needs ~20 GB): full fine-tuning in fp32 holds the policy, its
  gradient and two AdamW moments (16 bytes per parameter), the same for the critic, plus the reference and
  the reward model (4 bytes each): 40 bytes per parameter before activations. `--run-full` measures it.

One step is kept small so a single core finishes it: 2 prompts, 16 new tokens, 1 epoch, minibatch 2.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/ppo_memory.py   # prints JSON, writes docs/results/ppo_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
             intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=512)  # fmt: skip
STEP = dict(steps=1, batch_size=2, minibatch_size=2, epochs=1, max_new_tokens=16, forward_batch_size=2,
            generation_batch_size=2, sample_every=0, save_every=1000, max_prompt_tokens=48)  # fmt: skip


def build(root: Path) -> tuple[Path, Path, Path, int]:
    """(policy folder, reward model folder, prompts file, parameter count), written under `root`."""
    import torch
    from transformers import AutoModelForSequenceClassification, Qwen2Config, Qwen2ForCausalLM

    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.tokenizer import train_tokenizer

    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat and the dog ran to the river.\n" * 200)
    tok = train_tokenizer(corpus, 300, root / "tok")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Qwen2Config(**SHAPE, **ids)
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in policy.parameters())
    policy.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    del policy
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_config(Qwen2Config(**SHAPE, **ids, num_labels=1))
    rm.save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    del rm
    prompts = root / "prompts.jsonl"
    write_jsonl(
        prompts,
        [{"messages": [{"role": "user", "content": f"tell me about the river {i}"}]} for i in range(4)],
    )
    return root / "policy", root / "rm", prompts, params


def run_step(policy: Path, rm: Path, prompts: Path, out: Path, extra: list[str]) -> dict:
    """One `rlhfkit ppo` step in a child process: its wall time and peak RSS."""
    argv = [sys.executable, "-m", "rlhfkit.cli", "ppo", "--policy", str(policy), "--reward", str(rm),
            "--prompts", str(prompts), "--out", str(out), "--device", "cpu"]  # fmt: skip
    for key, value in STEP.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    if "--dtype" not in extra:
        argv += ["--dtype", "float32"]
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    with log.open("w") as fh:
        child = subprocess.Popen(argv + extra, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (not the max over all children)
    seconds = time.perf_counter() - t0
    output = log.read_text()
    if status != 0:
        raise SystemExit(f"ppo failed:\n{output[-4000:]}")
    peak_kib = usage.ru_maxrss
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    trainable = next((ln for ln in output.splitlines() if "trainable parameters" in ln), "")
    return {
        "peak_rss_gb": round(peak_kib / 2**20, 2),
        "wall_seconds": round(seconds, 1),
        "step_seconds": round(metrics["time_step"], 1),
        "time_generation": round(metrics["time_generation"], 1),
        "time_forwards": round(metrics["time_forwards"], 1),
        "time_training": round(metrics["time_training"], 1),
        "trainable": trainable.rsplit(", ", 1)[-1].strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-full", action="store_true", help="also measure full fp32 fine-tuning (~20 GB)")
    parser.add_argument(
        "--bf16", action="store_true", help="also measure LoRA with --dtype bfloat16 (frozen bases)"
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "ppo_memory.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ppo_memory_") as tmp:
        root = Path(tmp)
        policy, rm, prompts, params = build(root)
        lora = run_step(policy, rm, prompts, root / "ppo_lora", ["--lora-r", "16", "--lora-alpha", "32", "--gradient-checkpointing"])  # fmt: skip
        result = {
            "model": {"shape": "Qwen2.5-0.5B (random weights)", **SHAPE, "parameters": params},
            "step": STEP,
            "lora_r16_gradient_checkpointing_fp32": lora,
        }
        if args.bf16:
            extra = [
                "--lora-r",
                "16",
                "--lora-alpha",
                "32",
                "--gradient-checkpointing",
                "--dtype",
                "bfloat16",
            ]
            result["lora_r16_gradient_checkpointing_bf16_frozen"] = run_step(
                policy, rm, prompts, root / "ppo_bf16", extra
            )
        full_estimate = 40 * params / 1e9
        result["full_finetuning_fp32"] = {
            "estimated": True,
            "peak_gb_before_activations": round(full_estimate, 1),
            "how": "policy + critic: weights, gradients, 2 AdamW moments (16 B/param each); reference and reward "
            "model: weights (4 B/param each) = 40 B/param",
        }
        if args.run_full:
            result["full_finetuning_fp32"] = {"estimated": False, **run_step(policy, rm, prompts, root / "ppo_full", ["--no-critic-lora"])}  # fmt: skip
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": 1, "python": platform.python_version()}  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
