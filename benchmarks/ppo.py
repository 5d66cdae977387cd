"""PPO throughput: episodes/s, tokens/s and where the time goes, for `rlhfkit ppo` on `small` models,
next to TRL 1.12's PPOTrainer on the same models.

    .venv/bin/python benchmarks/ppo.py [--steps 4] [--batch-size 64] [--epochs 4] [--minibatch-size 16]
        [--response-length 48] [--value-model critic|head] [--bf16] [--threads N] [--preset small]
        [--work DIR] [--trl-python /tmp/trlvenv/bin/python]

Setting: the demo world's `small` prompt set and a 4,096-token tokenizer trained on its corpus; policy,
reference, reward model and critic are `--preset` (default `small`) models with random weights (throughput
does not depend on the weight values; a random policy almost never says end of turn, so every response is
exactly `--response-length` tokens, as in TRL, which always generates the full length). The critic starts
from the reward model, as in `rlhfkit ppo`'s default. The real training entry point `rlhfkit.ppo.run` is
measured; the first step is a warm-up and is not counted.

Side by side (`--trl-python PATH`): after rlhfkit's measurement, `PATH benchmarks/ppo_trl.py` runs TRL 1.12.0's
`trl.experimental.ppo.PPOTrainer` (the last TRL release with PPO) from a separate benchmark-only venv:

    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 trl==1.12.0

One command for the side-by-side result (prints JSON, writes docs/results/ppo_benchmark_<isa>.json):

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/ppo.py --steps 3 --trl-python /tmp/trlvenv/bin/python

It loads the very folders this script saves under `--work` (`policy-PRESET/`: policy and reference,
`rm-PRESET/`: reward model and value model, `world/prompts.jsonl`), with the same batch, minibatch, epochs,
response length, temperature, lr and KL coefficient; `ppo_trl.py`'s docstring lists what TRL cannot match.
The JSON then has a `trl` section and `speedup_vs_trl` = rlhfkit episodes/s / TRL episodes/s.

Prints one JSON object.
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
from rlhfkit.ppo import PPOConfig
from rlhfkit.ppo.config import PPOLoopConfig

ROOT = Path(__file__).resolve().parent.parent

VOCAB = 4096


def prepare(work: Path, preset: str) -> dict[str, Path]:
    """World prompts, tokenizer, random policy and reward model under `work` (reused when present)."""
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer, train_tokenizer
    from rlhfkit.world import build_world

    world, policy, rm = work / "world", work / f"policy-{preset}", work / f"rm-{preset}"
    if not (world / "prompts.jsonl").exists():
        build_world(world, seed=0, size="small")
    if not (policy / "config.json").exists():
        tok = train_tokenizer(world / "corpus.jsonl", VOCAB, policy)
        save_hf_checkpoint(build_model(preset, len(tok), 512, tok, seed=0), tok, policy)
    if not (rm / "config.json").exists():
        torch.manual_seed(1)
        model = AutoModelForSequenceClassification.from_pretrained(str(policy), num_labels=1)
        tok = load_tokenizer(policy)
        model.config.pad_token_id = tok.pad_token_id
        model.save_pretrained(rm)
        tok.save_pretrained(rm)
    return {"prompts": world / "prompts.jsonl", "policy": policy, "rm": rm}


def run_rlhfkit(paths: dict[str, Path], args, out: Path) -> dict:
    from rlhfkit.allocator import keep_freed_memory
    from rlhfkit.ppo import run

    keep_freed_memory()  # as the `rlhfkit` command does at start (the peer runs in its own process)

    shutil.rmtree(out, ignore_errors=True)
    cfg = PPOConfig(
        policy=str(paths["policy"]),
        reward=str(paths["rm"]),
        prompts=str(paths["prompts"]),
        out=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        epochs=args.epochs,
        minibatch_size=args.minibatch_size,
        max_new_tokens=args.response_length,
        value_model=args.value_model,
        dtype="bfloat16" if args.bf16 else "auto",
        group_by_length=not args.no_group_by_length,
        forward_batch_size=args.forward_batch_size,
        beta=args.beta,
        max_approx_kl=0.0,  # never stop epochs early: every step does the full work
        sample_every=0,
        device="cpu",
        loop=PPOLoopConfig(lr=args.lr, save_every=10**9),
    )
    with contextlib.redirect_stdout(sys.stderr):  # progress and messages to stderr: stdout is the JSON
        run(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows
    step_s = statistics.mean(r["time_step"] for r in timed)
    split = {
        part: round(statistics.mean(r[f"time_{part}"] for r in timed), 3)
        for part in ("generation", "scoring", "forwards", "training")
    }
    return {
        "episodes_per_s": round(args.batch_size / step_s, 3),
        "tokens_per_s": round(statistics.mean(r["tokens_per_s"] for r in timed), 1),
        "seconds_per_step": round(step_s, 3),
        "time_split_s": split,
        "response_length": statistics.mean(r["response_length"] for r in timed),
        "steps_timed": len(timed),
    }


def run_trl(python: str, work: Path, args) -> dict:
    """TRL's side, in its own venv's python; its JSON (the last stdout object), or an error record."""
    script = Path(__file__).with_name("ppo_trl.py")
    cmd = [python, str(script), "--work", str(work), "--preset", args.preset, "--steps", str(args.steps)]
    cmd += ["--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    cmd += ["--minibatch-size", str(args.minibatch_size), "--response-length", str(args.response_length)]
    cmd += ["--lr", str(args.lr), "--kl-coef", str(args.beta), "--threads", str(args.threads)]
    cmd += ["--bf16"] if args.bf16 else []
    print(f"trl: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.endswith("}"):
        return {"error": f"exit {proc.returncode}: {out[-500:] or 'no output'}", "command": cmd}
    return json.loads(out[out.rindex("\n{") + 1 :] if "\n{" in out else out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="PPO steps (the first one is not timed)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--value-model", default="critic", choices=["critic", "head"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--work", default=None, help="folder for models and runs (default: a temp folder)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the transformer bodies")
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate (both sides)")
    parser.add_argument(
        "--no-group-by-length", action="store_true", help="random minibatches instead of length-grouped ones"
    )
    parser.add_argument(
        "--forward-batch-size",
        type=int,
        default=PPOConfig.forward_batch_size,
        help="rows per no-grad rollout forward (default: PPOConfig's)",
    )
    parser.add_argument(
        "--beta", type=float, default=0.05, help="initial KL coefficient (TRL: fixed kl_coef)"
    )
    parser.add_argument(
        "--trl-python",
        default=None,
        help="python of a venv with trl==1.12.0: also run benchmarks/ppo_trl.py on the same models",
    )
    parser.add_argument(
        "--out", help="JSON result file (default docs/results/ppo_benchmark_<isa>[_bf16].json)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rlhfkit-ppo-bench-"))
    paths = prepare(work, args.preset)

    from rlhfkit.models import count_parameters, load_causal_lm

    result = {
        "benchmark": "ppo",
        "setting": {
            "preset": args.preset,
            "parameters": count_parameters(load_causal_lm(paths["policy"])),
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "minibatch_size": args.minibatch_size,
            "response_length": args.response_length,
            "value_model": args.value_model,
            "bf16": args.bf16,
            "group_by_length": not args.no_group_by_length,
            "forward_batch_size": args.forward_batch_size,
            "threads": torch.get_num_threads(),
        },
        "rlhfkit": run_rlhfkit(paths, args, work / "run-rlhfkit"),
    }
    if args.trl_python:
        result["trl"] = run_trl(args.trl_python, work, args)
        trl_eps = result["trl"].get("episodes_per_s")
        if trl_eps:
            result["speedup_vs_trl"] = round(result["rlhfkit"]["episodes_per_s"] / trl_eps, 2)
    result["cpu"] = cpu_info()
    result["python"] = sys.version.split()[0]
    out = Path(
        args.out
        or ROOT / "docs" / "results" / f"ppo_benchmark_{isa_tag()}{'_bf16' if args.bf16 else ''}.json"
    )
    if args.trl_python:  # a result file always holds both sides
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
