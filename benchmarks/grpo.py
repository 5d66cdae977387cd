"""GRPO and RLOO throughput and reward curves: `rlhfkit grpo|rloo` next to TRL 1.16's GRPOTrainer|RLOOTrainer,
interleaved in the same run.

    PYTHONPATH=src .venv/bin/python benchmarks/grpo.py --method grpo|rloo --trl-python /work/trlvenv/bin/python
        [--rounds 3] [--steps 30] [--batch-size 64] [--group-size 8] [--response-length 32] [--lr 1e-3]
        [--beta 0.05] [--preset tiny] [--threads N] [--work DIR]

The peer runs from a separate, benchmark-only venv (never rlhfkit's):

    python3 -m venv /work/trlvenv && /work/trlvenv/bin/pip install torch==2.13.0 trl==1.16.0

Setting: the demo world's `small` prompt set (200 prompts), a 4,096-token tokenizer trained on its corpus and a
`--preset` (default `tiny`) policy with random weights, saved by `benchmarks/ppo.py`'s `prepare` under WORK;
both sides load that folder (TRL loads the reference from it a second time; rlhfkit too). The reward is
`grpo_reward.py`'s deterministic python function of the response token ids (the share of tokens containing an
"e"), computed by the same code on both sides: no reward model. Each step samples `--group-size` completions to
each of `batch_size / group_size` prompts, scores them, and takes ONE optimizer step on all of them (rlhfkit:
`epochs=1`, `minibatch_size=batch_size`; TRL: `gradient_accumulation_steps=1`, `num_iterations=1`).

Matched: completions per prompt and per step, response cap (`max_new_tokens` = `max_completion_length`),
temperature 1 (no top-k/top-p), constant lr without warmup, fixed beta (rlhfkit's `kl_target=0`), clip 0.2,
grad-norm clip 1.0, AdamW without weight decay, fp32, CPU, one process, the same torch threads, chat-template
prompts with the generation prompt. GRPO: KL (k3) in the loss, group-std-normalized advantages, token-level mean
loss (TRL `loss_type="dapo"`). RLOO: KL (k1, summed per response) subtracted from the reward, leave-one-out
baseline, no whitening. rlhfkit's raw reward is used as is (`normalize_reward=False`, `reward_clip=0`,
`missing_eot_penalty=0`: TRL has none of them), no gold judge, no approx-KL early stop, no samples.

Differences TRL does not let us remove:
- Old log-probs: with one optimizer step per rollout TRL's GRPOTrainer skips the old-log-prob forward (the
  ratio is 1: it uses the detached current log-probs); rlhfkit always re-runs the policy over the rollout (no
  grad). TRL's RLOOTrainer runs that forward too (its KL reward reads it).
- RLOO loss: TRL's RLOOTrainer clips a sequence-level ratio (sum of the token log-ratios) and averages per
  sequence; rlhfkit clips per token and averages over tokens. At ratio 1 the gradient directions agree but
  TRL's is about `response_length` times larger per sequence before clipping (grad-norm clip 1.0 on both).
- Prompt order: TRL's shuffled RepeatSampler, rlhfkit's seeded per-step choice (the same 200 prompts).
- rlhfkit writes its final checkpoint after the last step (outside the timed steps); TRL saves nothing.

Measured, per side and round: the wall time of each optimizer step (rlhfkit's `time_step` in metrics.jsonl,
TRL's time between `on_step_end` callbacks); the first step is a warm-up and not counted; episodes/s =
batch_size / mean step time. The reward curve is the mean reward of each step's rollout, recorded inside the
reward function on both sides. The rounds interleave the sides (rlhfkit, TRL, rlhfkit, TRL, ...), each a fresh
run from the same seed, so load drifts hit both. `time_to_reward_s` is the training time (warm-up step
included) until a side's round-mean curve first reaches `reward_target` = the lower of the two sides' best
round-mean reward. Prints one JSON object and writes it to `--out` (default
docs/results/METHOD_trl_<isa>.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cpu_info import cpu_info, isa_tag
from grpo_reward import LetterShare
from ppo import prepare

ROOT = Path(__file__).resolve().parent.parent


def run_rlhfkit(paths: dict[str, Path], args, out: Path) -> dict:
    """One fresh `rlhfkit grpo|rloo` run (the real entry point `rlhfkit.ppo.run`); its step times and rewards."""
    from rlhfkit.ppo import GRPOConfig, RLOOConfig, run
    from rlhfkit.ppo.config import PPOLoopConfig
    from rlhfkit.tokenizer import load_tokenizer

    letter_share = LetterShare(load_tokenizer(paths["policy"]))
    step_rewards: list[float] = []

    def reward(_prompts, _texts, response_ids) -> list[float]:
        scores = [letter_share(ids) for ids in response_ids]
        step_rewards.append(statistics.mean(scores))
        return scores

    shutil.rmtree(out, ignore_errors=True)
    cfg = (GRPOConfig if args.method == "grpo" else RLOOConfig)(
        policy=str(paths["policy"]),
        prompts=str(paths["prompts"]),
        out=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        samples_per_prompt=args.group_size,
        epochs=1,
        minibatch_size=args.batch_size,
        max_new_tokens=args.response_length,
        temperature=1.0,
        beta=args.beta,
        kl_target=0.0,  # beta stays fixed, as TRL's
        normalize_reward=False,
        reward_clip=0.0,
        missing_eot_penalty=0.0,
        max_approx_kl=0.0,
        gold_judge=False,
        sample_every=0,
        device="cpu",
        dtype="float32",
        loop=PPOLoopConfig(lr=args.lr, warmup_steps=0, weight_decay=0.0, grad_clip=1.0, save_every=10**9),
    )
    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr: stdout is the JSON
        run(cfg, reward_fn=reward)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return side_summary([r["time_step"] for r in rows], step_rewards, args.batch_size)


def side_summary(step_seconds: list[float], step_rewards: list[float], batch_size: int) -> dict:
    timed = step_seconds[1:] or step_seconds
    return {
        "episodes_per_s": round(batch_size / statistics.mean(timed), 3),
        "step_seconds": [round(s, 3) for s in step_seconds],
        "reward_per_step": [round(r, 4) for r in step_rewards],
    }


def run_peer(args, work: Path) -> dict:
    """One fresh TRL run in the peer venv (benchmarks/grpo_trl.py); its JSON, or an error record."""
    script = Path(__file__).with_name("grpo_trl.py")
    cmd = [
        args.trl_python,
        str(script),
        "--work",
        str(work),
        "--method",
        args.method,
        "--preset",
        args.preset,
    ]
    cmd += [
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--group-size",
        str(args.group_size),
    ]
    cmd += ["--response-length", str(args.response_length), "--lr", str(args.lr), "--beta", str(args.beta)]
    cmd += ["--threads", str(args.threads), "--seed", "0"]
    print(f"trl: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.endswith("}"):
        raise SystemExit(f"TRL side failed (exit {proc.returncode}): {out[-500:] or 'no output'}")
    return json.loads(out)


def curve(rounds: list[dict]) -> tuple[list[float], list[float]]:
    """(mean reward per step, mean seconds per step) over the rounds of one side."""
    return (
        [
            round(statistics.mean(vals), 4)
            for vals in zip(*(r["reward_per_step"] for r in rounds), strict=True)
        ],
        [round(statistics.mean(vals), 3) for vals in zip(*(r["step_seconds"] for r in rounds), strict=True)],
    )


def time_to(target: float, rewards: list[float], seconds: list[float]) -> float | None:
    elapsed = 0.0
    for r, s in zip(rewards, seconds, strict=True):
        elapsed += s
        if r >= target:
            return round(elapsed, 2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="grpo", choices=["grpo", "rloo"])
    parser.add_argument("--trl-python", required=True, help="python of the venv with trl==1.16.0")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved (rlhfkit, TRL) run pairs")
    parser.add_argument(
        "--steps", type=int, default=30, help="optimizer steps per run (the first is not timed)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="completions per step")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt")
    parser.add_argument("--response-length", type=int, default=32)
    # 1e-3, not PPO's 5e-5: a random tiny policy then lifts the reward visibly within tens of steps
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)"
    )
    parser.add_argument(
        "--work", default=None, help="folder for the models and runs (default: a temp folder)"
    )
    parser.add_argument(
        "--out", default=None, help="JSON result file (default docs/results/METHOD_trl_<isa>.json)"
    )
    args = parser.parse_args()
    if args.batch_size % args.group_size:
        sys.exit(f"--batch-size {args.batch_size} must be a multiple of --group-size {args.group_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rlhfkit-grpo-bench-"))
    paths = prepare(work, args.preset)

    sides: dict[str, list[dict]] = {"rlhfkit": [], "trl": []}
    for i in range(args.rounds):
        sides["rlhfkit"].append(run_rlhfkit(paths, args, work / f"run-rlhfkit-{args.method}"))
        print(f"round {i + 1} rlhfkit: {sides['rlhfkit'][-1]['episodes_per_s']} episodes/s", file=sys.stderr)
        peer = run_peer(args, work)
        sides["trl"].append(side_summary(peer["step_seconds"], peer["reward_per_step"], args.batch_size))
        print(f"round {i + 1} trl: {sides['trl'][-1]['episodes_per_s']} episodes/s", file=sys.stderr)

    from rlhfkit.models import count_parameters, load_causal_lm

    result: dict = {
        "benchmark": args.method,
        "peer": f"trl {peer['trl']} {'GRPOTrainer' if args.method == 'grpo' else 'RLOOTrainer'}",
        "setting": {
            "preset": args.preset,
            "parameters": count_parameters(load_causal_lm(paths["policy"])),
            "steps_per_run": args.steps,
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "group_size": args.group_size,
            "response_length": args.response_length,
            "lr": args.lr,
            "beta": args.beta,
            "reward": "grpo_reward.LetterShare (python, from token ids)",
            "dtype": "float32",
            "threads": args.threads,
        },
    }
    curves = {name: curve(rounds) for name, rounds in sides.items()}
    target = min(max(rewards) for rewards, _ in curves.values())
    for name, rounds in sides.items():
        eps = [r["episodes_per_s"] for r in rounds]
        rewards, seconds = curves[name]
        result[name] = {
            "episodes_per_s": round(statistics.mean(eps), 3),
            "episodes_per_s_rounds": eps,
            "reward_curve": rewards,
            "seconds_per_step": seconds,
            "time_to_reward_s": time_to(target, rewards, seconds),
        }
    result["reward_target"] = target
    result["speedup_vs_trl"] = round(result["rlhfkit"]["episodes_per_s"] / result["trl"]["episodes_per_s"], 2)
    result["versions"] = {
        "torch": torch.__version__,
        "trl_torch": peer["torch"],
        "python": sys.version.split()[0],
    }
    result["cpu"] = cpu_info()
    text = json.dumps(result, indent=2)
    Path(args.out or ROOT / "docs" / "results" / f"{args.method}_trl_{isa_tag()}.json").write_text(
        text + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
