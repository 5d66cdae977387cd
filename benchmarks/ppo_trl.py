"""The peer side of `benchmarks/ppo.py`: TRL 1.12's PPOTrainer on the same models, prompts and batch shape.

Runs with the python of a separate, benchmark-only venv (never rlhfkit's own), e.g.

    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 trl==1.12.0
    /tmp/trlvenv/bin/python benchmarks/ppo_trl.py --work WORK [--preset small] [--steps 4] ...

`benchmarks/ppo.py --trl-python /tmp/trlvenv/bin/python` prepares WORK and calls this script itself. TRL 1.12.0
is the last release with PPO (`trl.experimental.ppo.PPOTrainer`); it does not import rlhfkit, only the files
`benchmarks/ppo.py` saved under WORK: `world/prompts.jsonl`, `policy-PRESET/` (LlamaForCausalLM + tokenizer;
the policy and, loaded a second time, the frozen reference) and `rm-PRESET/` (LlamaForSequenceClassification;
the reward model and, loaded a second time, the value model — rlhfkit's critic also starts from the RM).

Settings matched to rlhfkit (`PPOConfig` in src/rlhfkit/ppo/trainer.py):
- 64 episodes per rollout = `per_device_train_batch_size=64`, `gradient_accumulation_steps=1`;
  minibatches of 16 = `num_mini_batches=4` (one optimizer step per minibatch, as in rlhfkit: with
  `gradient_accumulation_steps=4` accelerate would only step once every 4 minibatches);
  `num_ppo_epochs=4`; `response_length=48`; `temperature=1.0`; `learning_rate=5e-5` (constant schedule);
  `kl_coef=0.05`; `missing_eos_penalty=1.0`; `stop_token="eos"` (`<|end|>`); gamma 1, lam 0.95, clip 0.2,
  value clip 0.2, vf_coef 0.1 (TRL's defaults; rlhfkit's default lam is 1.0, which costs the same).
- Dataset: each prompt rendered with the tokenizer's chat template and the generation prompt, without added
  special tokens, keeping its last 192 tokens (rlhfkit's `max_prompt_tokens`), left-padded per batch.
- fp32 unless `--bf16` (then TRL's own `bf16=True`, as rlhfkit's `--bf16` autocast) and no gradient checkpointing
  (TRL's config defaults it on; rlhfkit does not recompute activations). CPU (`use_cpu=True`), no sample
  generations, no checkpoint saving, no reporting.

Differences TRL does not let us remove (they do not change the work per step much):
- TRL takes the old log-probs from the generation logits (`output_scores`), rlhfkit re-runs the policy;
  TRL scores `query + response` tokens with the RM, rlhfkit the chat-template rendering (one more token).
- kl_coef stays fixed (rlhfkit's controller adapts beta); no gradient clipping in TRL's PPO loop;
  rlhfkit also scores every response with the demo world's gold judge (logged, never trained on) and stops
  epochs early on approx KL — the benchmark turns that off (`max_approx_kl=0`).
- Prompt order: TRL's shuffled DataLoader, rlhfkit's seeded per-epoch permutation (same prompt set).

Measured: wall time between the ends of consecutive PPO steps (TrainerCallback.on_step_end); the first step
(model warm-up, allocator growth) is reported separately and not counted. The step time covers everything
TRL does in a step: generation, reference/value/reward forwards, GAE, 4 epochs x 4 minibatches of policy and
value forward/backward, logging. Its split: `generation` (TRL's `batch_generation`), `forwards` (the no-grad
reference forward and the value/reward `get_reward` passes of the rollout) and the rest (`training`,
everything else). `tokens_per_s` counts generated response tokens up to and including the first `<|end|>`,
as rlhfkit's does. Prints one JSON object on stdout; TRL's own output goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from cpu_info import cpu_info


def load_prompt_ids(path: Path, tokenizer, max_prompt: int) -> list[list[int]]:
    """Prompts as rlhfkit feeds them: chat template + generation prompt, trailing assistant turn dropped."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        messages = list(json.loads(line)["messages"])
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages:
            continue
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"][-max_prompt:])
    return out


class Timer:
    """Wall-clock accumulators, reset at every step end."""

    def __init__(self) -> None:
        self.parts = {"generation": 0.0, "forwards": 0.0}
        self.generated_tokens = 0

    def timed(self, part: str, fn, only_no_grad: bool = False):
        def wrapper(*args, **kwargs):
            if only_no_grad and torch.is_grad_enabled():
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.parts[part] += time.perf_counter() - t0

        return wrapper

    def take(self) -> tuple[dict[str, float], int]:
        parts, tokens = dict(self.parts), self.generated_tokens
        self.parts = dict.fromkeys(self.parts, 0.0)
        self.generated_tokens = 0
        return parts, tokens


def response_tokens(responses: torch.Tensor, eos_id: int | None) -> int:
    """Tokens up to and including the first end of turn in each row (the full row if there is none)."""
    length = responses.shape[1]
    if eos_id is None:
        return responses.numel()
    hit = responses == eos_id
    first = torch.where(
        hit.any(1), hit.int().argmax(1) + 1, torch.full_like(hit[:, 0], length, dtype=torch.long)
    )
    return int(first.sum())


def measure(args: argparse.Namespace) -> dict:
    """Build TRL's PPOTrainer on the saved models, train `args.steps` steps, return the timings."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % args.minibatch_size:
        sys.exit(
            f"--batch-size {args.batch_size} must be a multiple of --minibatch-size {args.minibatch_size}"
        )

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the import warns that the API is experimental
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    work = Path(args.work)
    policy_dir, rm_dir, prompts = work / f"policy-{args.preset}", work / f"rm-{args.preset}", work / "world"
    for p in (policy_dir / "config.json", rm_dir / "config.json", prompts / "prompts.jsonl"):
        if not p.exists():
            sys.exit(
                f"{p}: missing; prepare {work} with benchmarks/ppo.py --work {work} --preset {args.preset}"
            )

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(policy_dir))
    tokenizer.padding_side = "left"  # TRL's queries are left-padded
    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(
        str(rm_dir), num_labels=1, dtype=torch.float32
    )
    value = AutoModelForSequenceClassification.from_pretrained(str(rm_dir), num_labels=1, dtype=torch.float32)
    for model in (reward, value):
        model.config.pad_token_id = tokenizer.pad_token_id
    limit = getattr(policy.config, "max_position_embeddings", None) or 10**9
    max_prompt = min(args.max_prompt_tokens, limit - args.response_length)
    ids = load_prompt_ids(prompts / "prompts.jsonl", tokenizer, max_prompt)
    if len(ids) < args.batch_size:
        sys.exit(
            f"{prompts / 'prompts.jsonl'}: {len(ids)} prompts, fewer than --batch-size {args.batch_size}"
        )
    dataset = Dataset.from_dict({"input_ids": ids})

    config = PPOConfig(
        output_dir=str(work / "run-trl"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.batch_size // args.minibatch_size,
        num_ppo_epochs=args.epochs,
        total_episodes=args.steps * args.batch_size,
        local_rollout_forward_batch_size=args.batch_size,
        response_length=args.response_length,
        temperature=1.0,
        stop_token="eos",
        missing_eos_penalty=args.missing_eos_penalty,
        kl_coef=args.kl_coef,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        num_sample_generations=0,
        bf16=args.bf16,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        seed=args.seed,
        dataloader_num_workers=0,
    )

    timer = Timer()
    eos_id = tokenizer.eos_token_id
    generate = trl_ppo.batch_generation

    def counted_generation(model, queries, *rest, **kwargs):
        query_responses, logits = generate(model, queries, *rest, **kwargs)
        timer.generated_tokens += response_tokens(query_responses[:, queries.shape[1] :], eos_id)
        return query_responses, logits

    # Module globals the PPO loop calls by name: wrapping them times the rollout's parts.
    trl_ppo.batch_generation = timer.timed("generation", counted_generation)
    trl_ppo.forward = timer.timed("forwards", trl_ppo.forward, only_no_grad=True)
    trl_ppo.get_reward = timer.timed("forwards", trl_ppo.get_reward)

    steps: list[dict] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            self.last = time.perf_counter()
            timer.take()

        def on_step_end(self, *_a, **_k):
            now = time.perf_counter()
            parts, tokens = timer.take()
            steps.append({"seconds": now - self.last, "tokens": tokens, **parts})
            print(f"trl step {len(steps)}: {steps[-1]}", file=sys.stderr, flush=True)
            self.last = now

    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=dataset,
        value_model=value,
        eval_dataset=dataset.select(range(min(len(dataset), args.batch_size))),
        callbacks=[StepClock()],
    )
    trainer.train()

    timed = steps[1:] or steps
    step_s = statistics.mean(s["seconds"] for s in timed)
    split = {part: round(statistics.mean(s[part] for s in timed), 3) for part in ("generation", "forwards")}
    split["training"] = round(step_s - split["generation"] - split["forwards"], 3)
    return {
        "episodes_per_s": round(args.batch_size / step_s, 3),
        "tokens_per_s": round(statistics.mean(s["tokens"] / s["seconds"] for s in timed), 1),
        "seconds_per_step": round(step_s, 3),
        "time_split_s": split,
        "response_length": statistics.mean(s["tokens"] for s in timed) / args.batch_size,
        "steps_timed": len(timed),
        "first_step_s": round(steps[0]["seconds"], 3) if steps else None,
        "trl": trl.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_info(),
        "settings": {
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "num_mini_batches": config.num_mini_batches,
            "num_ppo_epochs": config.num_ppo_epochs,
            "response_length": config.response_length,
            "temperature": config.temperature,
            "learning_rate": config.learning_rate,
            "kl_coef": config.kl_coef,
            "missing_eos_penalty": config.missing_eos_penalty,
            "prompts": len(ids),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder prepared by benchmarks/ppo.py")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=4, help="PPO steps (the first one is not timed)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--max-prompt-tokens", type=int, default=192)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 mixed precision (TRL's own bf16 option)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # TRL's and transformers' prints go to stderr: stdout is the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        result = measure(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
