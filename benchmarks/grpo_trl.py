"""The peer side of `benchmarks/grpo.py`: TRL 1.16's GRPOTrainer or RLOOTrainer on the same policy, prompts,
reward and group shape.

Runs with the python of a separate, benchmark-only venv (never rlhfkit's own), e.g.

    python3 -m venv /work/trlvenv && /work/trlvenv/bin/pip install torch==2.13.0 trl==1.16.0
    /work/trlvenv/bin/python benchmarks/grpo_trl.py --work WORK --method grpo|rloo [--steps 4] ...

`benchmarks/grpo.py --trl-python /work/trlvenv/bin/python` prepares WORK and calls this script itself. It does
not import rlhfkit, only the files `benchmarks/ppo.py`'s `prepare` saved under WORK (`world/prompts.jsonl`,
`policy-PRESET/`: the policy and, loaded a second time by TRL, the frozen reference) and the reward of
`grpo_reward.py`, computed from the completion token ids TRL passes its reward functions.

Settings matched to `grpo.py`'s rlhfkit side: `per_device_train_batch_size` = episodes per step,
`gradient_accumulation_steps=1` and `num_iterations=1` (one optimizer step on each rollout, as rlhfkit's
`epochs=1`, `minibatch_size=batch_size`), `num_generations` = completions per prompt, `max_completion_length`,
`temperature=1.0` (top_k 0, top_p 1), constant `learning_rate` without warmup, fixed `beta`, clip
`epsilon=0.2`, `max_grad_norm=1.0`, no weight decay, fp32, no gradient checkpointing, CPU (`use_cpu=True`),
prompts rendered by the tokenizer's chat template with the generation prompt. GRPO: `loss_type="dapo"` (the
token-level mean over the batch, as rlhfkit's masked mean), `scale_rewards="group"` (group std), KL (k3) in
the loss. RLOO: KL (k1, summed over the sequence) subtracted from the reward, no advantage whitening.
`grpo.py`'s docstring lists the differences TRL does not let us remove.

Measured: wall time between the ends of consecutive optimizer steps (TrainerCallback.on_step_end; the first
step is reported separately, not counted) and the mean reward of each step's rollout (recorded inside the
reward function, which TRL calls once per generation batch). Prints one JSON object on stdout; TRL's own output
goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from cpu_info import cpu_info
from grpo_reward import LetterShare


def load_prompts(path: Path) -> list[list[dict]]:
    """Each record's messages with a trailing assistant turn dropped, as rlhfkit's prompt loader does."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        messages = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if messages:
            out.append(messages)
    return out


def measure(args: argparse.Namespace) -> dict:
    """Build TRL's trainer for `args.method` on the saved policy, train `args.steps` steps, return timings."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % args.group_size:
        sys.exit(f"--batch-size {args.batch_size} must be a multiple of --group-size {args.group_size}")
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    if args.method == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

    work = Path(args.work)
    policy_dir, prompts = work / f"policy-{args.preset}", work / "world" / "prompts.jsonl"
    for p in (policy_dir / "config.json", prompts):
        if not p.exists():
            sys.exit(
                f"{p}: missing; prepare {work} with benchmarks/grpo.py --work {work} --preset {args.preset}"
            )

    tokenizer = AutoTokenizer.from_pretrained(str(policy_dir))
    letter_share = LetterShare(tokenizer)
    step_rewards: list[float] = []

    def reward(prompts, completions, completion_ids, **_kwargs) -> list[float]:
        scores = [letter_share(list(ids)) for ids in completion_ids]
        step_rewards.append(statistics.mean(scores))
        return scores

    method_settings = (
        {"loss_type": "dapo", "scale_rewards": "group"}
        if args.method == "grpo"
        else {"normalize_advantages": False}
    )
    config = Config(
        output_dir=str(work / f"run-trl-{args.method}"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_generations=args.group_size,
        num_iterations=1,
        max_completion_length=args.response_length,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=args.beta,
        epsilon=0.2,
        max_steps=args.steps,
        model_init_kwargs={"dtype": torch.float32},
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        log_completions=False,
        seed=args.seed,
        dataloader_num_workers=0,
        **method_settings,
    )

    steps: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            self.last = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            now = time.perf_counter()
            steps.append(now - self.last)
            print(f"trl {args.method} step {len(steps)}: {steps[-1]:.2f}s", file=sys.stderr, flush=True)
            self.last = now

    torch.manual_seed(args.seed)
    trainer = Trainer(
        model=str(policy_dir),
        reward_funcs=reward,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": load_prompts(prompts)}),
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    trainer.train()

    timed = steps[1:] or steps
    step_s = statistics.mean(timed)
    return {
        "episodes_per_s": round(args.batch_size / step_s, 3),
        "seconds_per_step": round(step_s, 3),
        "step_seconds": [round(s, 3) for s in steps],
        "reward_per_step": [round(r, 4) for r in step_rewards],
        "steps_timed": len(timed),
        "trl": trl.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder prepared by benchmarks/grpo.py")
    parser.add_argument("--method", default="grpo", choices=["grpo", "rloo"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (the first one is not timed)")
    parser.add_argument("--batch-size", type=int, default=64, help="completions per step")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # TRL's and transformers' prints: stdout is the JSON
        result = measure(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
