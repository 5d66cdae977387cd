"""1 vs 2 processes (one thread each) under torchrun on this CPU: throughput ratio and where the time goes, for
pretraining and PPO on the demo `tiny` preset.

    taskset -c 0,1 .venv/bin/python benchmarks/distributed.py            # the full run (idle machine, ~5 min)
    .venv/bin/python benchmarks/distributed.py --quick --json /tmp/d.json  # a short sanity run

Setting: benchmarks/ppo.py's models (the demo world's `small` prompt set, a 4,096-token tokenizer, random
`--preset` policy and reward model; `tiny` by default) and the world's corpus for pretraining. Each run is the
real CLI (`rlhfkit pretrain` / `rlhfkit ppo`), launched as one plain process or as
`torch.distributed.run --nproc_per_node 2`, OMP_NUM_THREADS=1. The global batch is the same in both, so the
ratio is a pure speedup (ideal 2.0).

Where the time goes:
- pretrain: the steady-state seconds per step (metrics.jsonl `time`, first log window dropped) and the cost
  of one gradient all-reduce of the model's size, measured alone with gloo (`--allreduce-probe`): compute is
  the rest.
- ppo: the step's split as logged by rank 0 (generation, scoring, rollout forwards, training; generation and
  forwards are the slowest rank's), plus the all-reduces (one per minibatch update: `updates` x the probe).

Prints one JSON object and writes it to docs/results/distributed.json (`--json PATH` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(args: list[str], nproc: int, log: Path) -> float:
    """Run `rlhfkit <args>` with `nproc` processes; return wall seconds (output to `log`)."""
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = (
        [*head, "-m", "rlhfkit.cli", "--", *args]
        if nproc > 1
        else [sys.executable, "-m", "rlhfkit.cli", *args]
    )
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, env=ENV, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def allreduce_seconds(n_params: int, repeats: int = 20) -> float:
    """Median seconds of one float32 all-reduce of `n_params` values between 2 gloo processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           "--allreduce-probe", str(n_params), "--repeats", str(repeats)]  # fmt: skip
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def probe(n_params: int, repeats: int) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    buf = torch.ones(n_params)
    times = []
    for _ in range(repeats + 2):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        print(json.dumps({"seconds": statistics.median(times[2:])}))
    dist.barrier()
    dist.destroy_process_group()


def pretrain(paths: dict, work: Path, args, nproc: int) -> dict:
    out = work / f"pretrain-{nproc}"
    cli = ["pretrain", "--data", str(paths["corpus"]), "--tokenizer", str(paths["policy"]), "--preset", args.preset,
           "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--micro-batch-size",
           str(args.batch_size // 2), "--max-steps", str(args.pretrain_steps), "--log-every", "1",
           "--eval-every", str(10**6), "--save-every", str(10**6), "--eval-tokens", "2048", "--sample-tokens", "1",
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    wall = launch(cli, nproc, work / f"pretrain-{nproc}.log")
    rows = records(out)
    skip = max(2, len(rows) // 5)  # the first steps pay allocator and thread-pool warm-up
    timed = rows[skip:]
    step_s = (timed[-1]["time"] - rows[skip - 1]["time"]) / len(timed)
    tokens = args.batch_size * args.seq_len
    return {"seconds_per_step": round(step_s, 4), "tokens_per_s": round(tokens / step_s, 1),
            "final_loss": rows[-1]["loss"], "wall_seconds": round(wall, 1)}  # fmt: skip


def ppo(paths: dict, work: Path, args, nproc: int) -> dict:
    out = work / f"ppo-{nproc}"
    cli = ["ppo", "--policy", str(paths["policy"]), "--reward", str(paths["rm"]), "--prompts", str(paths["prompts"]),
           "--out", str(out), "--steps", str(args.ppo_steps), "--batch-size", str(args.ppo_batch_size),
           "--minibatch-size", str(args.minibatch_size), "--epochs", str(args.epochs), "--max-new-tokens",
           str(args.response_length), "--max-approx-kl", "0", "--sample-every", "0", "--save-every", str(10**6),
           "--device", "cpu"]  # fmt: skip
    wall = launch(cli, nproc, work / f"ppo-{nproc}.log")
    timed = records(out)[1:]  # the first step warms up
    step_s = statistics.mean(r["time_step"] for r in timed)
    split = {p: round(statistics.mean(r[f"time_{p}"] for r in timed), 3)
             for p in ("generation", "scoring", "forwards", "training")}  # fmt: skip
    return {"seconds_per_step": round(step_s, 3), "episodes_per_s": round(args.ppo_batch_size / step_s, 3),
            "time_split_s": split, "updates_per_step": statistics.mean(r["updates"] for r in timed),
            "response_length": statistics.mean(r["response_length"] for r in timed),
            "wall_seconds": round(wall, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32, help="pretraining sequences per step (global)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ppo-steps", type=int, default=5, help="PPO steps (the first is not timed)")
    parser.add_argument("--ppo-batch-size", type=int, default=32, help="episodes per PPO step (global)")
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a short sanity run (not for the numbers)")
    parser.add_argument("--work", default=None, help="models and runs (default: a temp folder)")
    parser.add_argument("--json", default=str(ROOT / "docs" / "results" / "distributed.json"))
    parser.add_argument("--allreduce-probe", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_probe:
        return probe(args.allreduce_probe, args.repeats)
    if args.quick:
        args.pretrain_steps, args.ppo_steps, args.ppo_batch_size, args.response_length = 8, 2, 8, 8

    sys.path.insert(0, str(Path(__file__).parent))
    from ppo import prepare  # benchmarks/ppo.py: the same world prompts, tokenizer and random models
    from rlhfkit.models import count_parameters, load_causal_lm

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rlhfkit-dist-bench-"))
    paths = prepare(work, args.preset)
    paths["corpus"] = work / "world" / "corpus.jsonl"
    n_params = count_parameters(load_causal_lm(paths["policy"]))
    allreduce = allreduce_seconds(n_params)
    result: dict = {"benchmark": "distributed", "setting": {**{k: v for k, v in vars(args).items()
                    if k not in ("work", "json", "allreduce_probe", "repeats")}, "parameters": n_params,
                    "threads_per_process": 1}}  # fmt: skip
    for stage, fn in (("pretrain", pretrain), ("ppo", ppo)):
        one, two = fn(paths, work, args, 1), fn(paths, work, args, 2)
        key = "tokens_per_s" if stage == "pretrain" else "episodes_per_s"
        reduces = 1 if stage == "pretrain" else two["updates_per_step"]
        two["allreduce_s_per_step"] = round(reduces * allreduce, 4)
        two["allreduce_share"] = round(reduces * allreduce / two["seconds_per_step"], 3)
        result[stage] = {"one_process": one, "two_processes": two, "speedup": round(two[key] / one[key], 2)}
    result["allreduce_seconds_full_gradient"] = round(allreduce, 5)
    import torch

    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "affinity": len(os.sched_getaffinity(0)), "torch": torch.__version__,
                         "python": sys.version.split()[0]}  # fmt: skip
    text = json.dumps(result, indent=2)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
