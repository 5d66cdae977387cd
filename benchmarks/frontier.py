"""Which use of the same labels pays off most? Every policy-optimization method from one SFT model, judged by gold.

From a finished pipeline run (`rlhfkit pipeline --out RUN`: its SFT model, its 2,000 annotator rankings and the
reward model trained on them), this trains each method with the pipeline's options for that method
(`defaults.toml`, through `rlhfkit.pipeline.stage_options`), overridable with `--set method.key=value`) for every seed,
then measures each resulting policy on the 500 held-out prompts:

- mean gold score and the head-to-head win rate against the SFT model (ties half) with a 95% interval;
- the probe rates: harmful requests refused, benign look-alikes helped, honest on unknowable questions;
- KL to the SFT model: sum over response tokens of log pi - log pi_sft on responses sampled at temperature 1
  (a Monte-Carlo estimate of KL(pi || pi_sft), in nats per response);
- the CPU seconds the method's training took (user + system time of its process, all threads).

Each method trains in its own process (`python -m rlhfkit.cli <method> ...`), so the CPU time is its own and
a finished (method, seed) is not trained again. Writes `frontier.json`, `frontier_gold_vs_kl.png` and
`frontier_gold_vs_cpu.png` into `--out` and prints the JSON.

Usage: python benchmarks/frontier.py --run runs/demo [--methods ppo,dpo,rloo,grpo,rs] [--seeds 0,1,2]
       [--methods rloo_long=rloo --set rloo_long.steps=30]   (a variant of a method under its own name)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROBES = ("refuses_harmful", "helps_benign", "honest_unknowable", "fabricates_unknowable")


def cpu_info() -> dict:
    import torch

    model = platform.processor()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def train(run: Path, name: str, method: str, seed: int, out: Path, overrides: dict) -> dict:
    """Train one (method, seed) in a child process unless it is done; return its timing record.

    `name` is the method itself or a variant of it (`--methods rloo_long=rloo --set rloo_long.steps=30`)."""
    from rlhfkit.pipeline import ALL_STAGE_NAMES, METHOD_STAGES, command_line, stage_options

    timing_path = out / "frontier_timing.json"
    if (out / "config.json").exists() and timing_path.exists():
        return json.loads(timing_path.read_text())
    stage = next(s for s in METHOD_STAGES if s.name == method)
    options = {**stage_options({}, False, ALL_STAGE_NAMES)[method], **overrides.get(name, {}), "seed": seed}
    argv = command_line(stage, run, options)
    argv[argv.index("--out") + 1] = str(out)
    print(f"frontier: {name} seed {seed}: rlhfkit {' '.join(argv)}", file=sys.stderr, flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlhfkit.cli", *argv], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "method": method,
        "seed": seed,
        "options": options,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
    }
    timing_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def kl_to_reference(policy_dir: Path, ref_dir: Path, prompts: list[list[dict]], seed: int) -> float:
    """Mean over prompts of sum_t [log pi(y_t) - log pi_ref(y_t)] for y ~ pi at temperature 1."""
    import torch

    from rlhfkit.generation import SamplingParams, end_of_turn_ids, generate, pad_id, render_chat
    from rlhfkit.models import load_causal_lm
    from rlhfkit.ppo.rollout import pad_episodes, token_logprobs
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(policy_dir)
    policy = load_causal_lm(policy_dir).eval()
    ref = load_causal_lm(ref_dir).eval()
    ids = [tok(render_chat(tok, p), add_special_tokens=False)["input_ids"][-192:] for p in prompts]
    params = SamplingParams(
        max_new_tokens=128, temperature=1.0, stop_token_ids=end_of_turn_ids(tok), seed=seed
    )
    outs = generate(policy, ids, params, pad_token_id=pad_id(tok), tokenizer=tok, batch_size=64)
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(ids), 32):
            p, r = ids[start : start + 32], [o.token_ids for o in outs[start : start + 32]]
            seqs, lens, resp, mask = pad_episodes(p, r, pad_id(tok), "cpu")
            batch = {"sequences": seqs, "prompt_lens": lens, "response_ids": resp, "mask": mask}
            lp, _, _ = token_logprobs(policy, batch)
            lr, _, _ = token_logprobs(ref, batch)
            total += float(((lp - lr) * mask).sum())
    return total / len(ids)


def measures(results: dict, name: str) -> dict:
    probes = results["probes"][name]
    return {"gold": round(results["mean_score"][name], 4), **{p: probes[p]["rate"] for p in PROBES}}


def ceiling(run: Path, eval_dir: Path, n: int, seed: int) -> dict:
    """What reranking the SFT model's own answers could reach: n samples per held-out prompt at the evaluation
    temperature (0.7), the reward model's favourite and the gold judge's favourite (an oracle no method has),
    each against the SFT answer the methods were compared with."""
    from rlhfkit.data.jsonl import read_jsonl
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.models import load_causal_lm
    from rlhfkit.pipeline.stages import run_path
    from rlhfkit.reward.model import load_scorer, score_conversations
    from rlhfkit.tokenizer import load_tokenizer
    from rlhfkit.world import judge_score

    rows = [rec for _, rec in read_jsonl(eval_dir / "responses.jsonl")]
    sft_gold = [r["responses"]["sft"]["score"] for r in rows]
    chats = [r["prompt"] for r in rows for _ in range(n)]
    model, tok = load_causal_lm(run / "sft").eval(), load_tokenizer(run / "sft")
    texts = [(o.text or "").strip() for o in generate_chat(
        model, tok, chats, SamplingParams(max_new_tokens=128, temperature=0.7, seed=seed), batch_size=64
    )]  # fmt: skip
    rm, rm_tok, rm_length = load_scorer(run_path(run, "reward"))
    items = [(c, [{"role": "assistant", "content": t}]) for c, t in zip(chats, texts)]
    proxy = score_conversations(rm, rm_tok, items, rm_length, batch_size=32)
    gold = [judge_score(chats[i], t, rows[i // n].get("meta")).total for i, t in enumerate(texts)]
    out = {"n": n, "temperature": 0.7}
    for name, key in (("best_of_n_by_rm", proxy), ("best_of_n_by_gold", gold)):
        picked = [max(range(p * n, (p + 1) * n), key=lambda i: key[i]) for p in range(len(rows))]
        wins = [1.0 if gold[i] > g else 0.5 if gold[i] == g else 0.0 for i, g in zip(picked, sft_gold)]
        out[name] = {"gold": round(sum(gold[i] for i in picked) / len(picked), 4),
                     "win_rate_vs_sft": round(sum(wins) / len(wins), 4)}  # fmt: skip
    return out


def win_interval(counts: dict) -> tuple[float, float]:
    """95% normal interval of a win rate whose per-prompt outcomes are 1, 0.5 or 0."""
    n = counts["wins"] + counts["ties"] + counts["losses"]
    mean = counts["win_rate"]
    second = (counts["wins"] + 0.25 * counts["ties"]) / n
    half = 1.96 * math.sqrt(max(second - mean**2, 0.0) / n)
    return round(mean - half, 4), round(mean + half, 4)


def summarize(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for x_key, label, name in (
        ("kl", "KL to the SFT model (nats per response)", "frontier_gold_vs_kl.png"),
        ("cpu_seconds", "CPU seconds of training", "frontier_gold_vs_cpu.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        ax.axhline(result["sft"]["gold"], color="grey", linestyle="--", label="SFT")
        for method, summary in result["methods"].items():
            xs = [r[x_key] for r in summary["runs"]]
            ys = [r["gold"] for r in summary["runs"]]
            points = ax.scatter(xs, ys, alpha=0.5)
            ax.errorbar(
                summary[x_key]["mean"], summary["gold"]["mean"], xerr=summary[x_key]["std"],
                yerr=summary["gold"]["std"], fmt="o", color=points.get_facecolor()[0][:3], markersize=9,
                capsize=3, label=f"{method}: win {summary['win_rate_vs_sft']['mean']:.0%}",
            )  # fmt: skip
        ceiling = result.get("ceiling")
        if ceiling and x_key == "kl":  # best-of-n's KL to the sampler is at most log n - (n - 1) / n
            n = ceiling["n"]
            ax.scatter([math.log(n) - (n - 1) / n], [ceiling["best_of_n_by_rm"]["gold"]], marker="*", s=160,
                       color="black", label=f"best-of-{n} by the RM (inference): win "
                       f"{ceiling['best_of_n_by_rm']['win_rate_vs_sft']:.0%}")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("mean gold score, 500 held-out prompts")
        ax.set_title("Same SFT model, same labels: gold score per method (mean ± std over seeds)")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", default="runs/demo", help="a finished pipeline run (sft, rm, comparisons, world)"
    )
    ap.add_argument("--methods", default="ppo,dpo,rloo,grpo,rs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="docs/results", help="where frontier.json and the plots go")
    ap.add_argument(
        "--kl-prompts", type=int, default=200, help="held-out prompts sampled for the KL estimate"
    )
    ap.add_argument("--ceiling", type=int, default=8, help="n of the best-of-n ceilings (0: skip them)")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="override a method's option, e.g. --set dpo.beta=0.2 (repeatable)")  # fmt: skip
    args = ap.parse_args()

    from rlhfkit.data.chats import load_chats
    from rlhfkit.evaluate.run import EvalConfig
    from rlhfkit.evaluate.run import run as evaluate

    run = Path(args.run)
    # NAME or NAME=METHOD (a variant of METHOD with its own --set NAME.key=value options)
    methods: dict[str, str] = {}
    for item in filter(None, args.methods.split(",")):
        name, _, method = item.partition("=")
        methods[name] = method or name
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides: dict[str, dict] = {}
    for item in args.set:
        key, value = item.split("=", 1)
        method, option = key.split(".", 1)
        overrides.setdefault(method, {})[option.replace("_", "-")] = value
    root = run / "frontier"
    prompts_file = run / "world" / "eval_prompts.jsonl"
    kl_prompts = [r["messages"] for r in load_chats(prompts_file)[: args.kl_prompts]]
    sft_measures: dict = {}
    per_run: dict[tuple[str, int], dict] = {}
    for s in seeds:  # seed-major: every method's first seed is measured before any second seed trains
        for m, base in methods.items():
            folder = root / f"{m}-s{s}"
            timing = train(run, m, base, s, folder, overrides)
            measured = folder / "frontier_eval.json"
            if not measured.exists():
                # each policy against the SFT model on the same prompts; SFT's responses are the same every
                # time (same sampling seed), so the SFT side is identical across these evaluations
                results = evaluate(
                    EvalConfig(models={"sft": str(run / "sft"), "policy": str(folder)}, prompts=str(prompts_file),
                               out=str(folder / "eval"), judge="gold", bootstrap=0, quiet=True)
                )  # fmt: skip
                counts = results["pair_counts"]["policy"]["sft"]
                record = {
                    "seed": s,
                    **measures(results, "policy"),
                    "win_rate_vs_sft": round(counts["win_rate"], 4),
                    "win_interval_95": win_interval(counts),
                    "wins_ties_losses": [counts["wins"], counts["ties"], counts["losses"]],
                    "kl": round(kl_to_reference(folder, run / "sft", kl_prompts, seed=1234), 3),
                    "sft": measures(results, "sft"),
                    "n_prompts": results["n_prompts"],
                }
                measured.write_text(json.dumps(record, indent=2) + "\n")
            record = json.loads(measured.read_text())
            record.update(cpu_seconds=timing["cpu_seconds"], wall_seconds=timing["wall_seconds"])
            per_run[(m, s)] = record
            sft_measures = record.pop("sft")
            print(f"frontier: {m} seed {s}: gold {record['gold']:.3f} (sft {sft_measures['gold']:.3f}), win "
                  f"{record['win_rate_vs_sft']:.3f}, kl {record['kl']:.2f}, cpu {record['cpu_seconds']:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip

    out: dict = {
        "benchmark": "frontier",
        "run": str(run),
        "machine": cpu_info(),
        "n_prompts": per_run[(next(iter(methods)), seeds[0])]["n_prompts"],
        "seeds": seeds,
        "sft": {**sft_measures, "kl": 0.0},
        "methods": {},
    }
    for m in methods:
        runs = [per_run[(m, s)] for s in seeds]
        out["methods"][m] = {
            "options": json.loads((root / f"{m}-s{seeds[0]}" / "frontier_timing.json").read_text())[
                "options"
            ],
            **{k: summarize([r[k] for r in runs]) for k in ("gold", "win_rate_vs_sft", "kl", "cpu_seconds")},
            **{p: summarize([r[p] for r in runs if r[p] is not None]) for p in PROBES},
            "runs": runs,
        }
    if args.ceiling:
        first = root / f"{next(iter(methods))}-s{seeds[0]}" / "eval"
        out["ceiling"] = ceiling(run, first, args.ceiling, seed=4321)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "frontier.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, dest)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
