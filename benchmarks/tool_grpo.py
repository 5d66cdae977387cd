"""Does GRPO with the verifier and the world's tools raise verifiable accuracy over SFT? Prints JSON.

Phases (each one command, so each stays a short locked run on a shared CPU):
  prepare  the world with `--verifiable N --tools`, a tokenizer on its corpus and tool chats (digits split, as
           the pipeline's), and an untrained model of `--preset` (no pretraining: the tool demonstrations are
           the whole curriculum)
  sft      SFT on verifiable_tools_sft.jsonl
  grpo     `rlhfkit grpo --reward verifier --max-tool-turns T` on verifiable_train.jsonl from the SFT model
  eval     accuracy on the held-out verifiable_eval.jsonl and on fresh train-template prompts, each played with
           the tools through the rollout's own environment (`ppo.environment.run_episodes`): greedy, and pass@1 /
           pass@k of `--samples` k episodes at temperature 1, overall, for arithmetic and comparison kinds, by kind
           (also written to MODEL/tool_eval.json)
  compare  `--names a,b,...`: those GRPO runs' reward curves (verifier share, process score, optimized reward,
           CPU seconds, KL) and evaluations side by side: which reward learns, and which is being hacked

    python benchmarks/tool_grpo.py prepare --out /tmp/tools && python benchmarks/tool_grpo.py sft --out /tmp/tools
    python benchmarks/tool_grpo.py eval --out /tmp/tools --model sft && ... grpo ... && ... eval --model grpo

Measured (seed 0, AMD EPYC, 2 cores shared with other jobs): docs/methods.md, "Tools and multi-turn rollouts".
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from cpu_info import cpu_info


def prepare(args) -> dict:
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import train_tokenizer
    from rlhfkit.world.build import WorldConfig
    from rlhfkit.world.build import run as build_world

    out = Path(args.out)
    build_world(
        WorldConfig(
            out=str(out / "world"),
            size="small",
            seed=args.seed,
            verifiable=args.n,
            tools=True,
            tool_practice=args.tool_practice,
        )
    )
    world = out / "world"
    # as the pipeline's rlvr_tokenizer stage: the corpus and the tool chats as the template renders them, digits split
    tok = train_tokenizer(
        world / "corpus.jsonl",
        args.vocab,
        out / "base",
        chats=world / "verifiable_tools_sft.jsonl",
        split_digits=True,
    )
    model = build_model(args.preset, len(tok), args.max_len, tok, seed=args.seed)
    save_hf_checkpoint(model, tok, out / "base")
    return {"parameters": sum(p.numel() for p in model.parameters())}


def sft(args) -> dict:
    from rlhfkit.train.loop import LoopConfig
    from rlhfkit.train.sft import SFTConfig
    from rlhfkit.train.sft import run as run_sft

    out = Path(args.out)
    loop = LoopConfig(
        max_steps=args.steps, lr=args.lr, warmup_steps=20, weight_decay=0.0, eval_every=args.steps
    )
    cfg = SFTConfig(
        model=str(out / "base"),
        data=str(out / "world" / "verifiable_tools_sft.jsonl"),
        out=str(out / "sft"),
        max_len=args.max_len,
        batch_size=32,
        micro_batch_size=32,
        epochs=0,
        device="cpu",
        sample_every_eval=0,
        loop=loop,
    )
    run_sft(cfg)
    last = [json.loads(x) for x in (out / "sft" / "metrics.jsonl").read_text().splitlines()][-1]
    return {k: v for k, v in last.items() if "loss" in k}


def logged_reward(spec: str, prompts: str, log: Path, process_model: str = ""):
    """The reward of `--reward` (a verifier spec, or rm:FOLDER for a reward model alone), which also appends, per
    rollout, the process CPU seconds so far, the verifier's share of right answers, the process score (the share
    of the tasks' steps the tool calls did) and the mean reward to `log`: every reward measured the same way."""
    from statistics import mean

    from rlhfkit.ppo.process_reward import process_score
    from rlhfkit.ppo.verifier_reward import load_steps, verifier_reward_fn
    from rlhfkit.verifier import prompt_key

    check, _ = verifier_reward_fn("verifier", prompts)
    steps = load_steps(prompts)
    if spec.startswith("rm:"):
        from rlhfkit.ppo.rm_reward import rm_reward_fn

        fn, _ = rm_reward_fn(spec[3:], "cpu", 512, 64)
    else:
        fn, _ = verifier_reward_fn(spec, prompts, process_model)

    def score(messages, texts, ids, turns):
        extra = {"turns": turns} if getattr(fn, "reads_turns", False) else {}
        rewards = [float(x) for x in fn(messages, texts, ids, **extra)]
        row = {
            "cpu_s": round(time.process_time(), 2),
            "verifier": mean(check(messages, texts, ids)),
            "process": mean(process_score(steps.get(prompt_key(m), []), t) for m, t in zip(messages, turns)),
            "reward": mean(rewards),
        }
        with log.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        return rewards

    score.reads_turns = True
    return score


def grpo(args) -> dict:
    from rlhfkit.ppo.config import GRPOConfig, PPOLoopConfig
    from rlhfkit.ppo.trainer import run

    out = Path(args.out)
    prompts = str(out / "world" / "verifiable_train.jsonl")
    (out / args.name).mkdir(parents=True, exist_ok=True)
    curve = out / args.name / "reward_curve.jsonl"
    curve.unlink(missing_ok=True)
    reward_fn = logged_reward(args.reward, prompts, curve, args.process_model)
    cfg = GRPOConfig(
        policy=str(out / "sft"),
        prompts=prompts,
        out=str(out / args.name),
        reward="" if args.reward.startswith("rm:") else args.reward,  # the RM is scored by reward_fn
        steps=args.steps,
        batch_size=args.batch,
        samples_per_prompt=args.k,
        epochs=args.epochs,
        temperature=args.rl_temperature,
        minibatch_size=args.batch // 2,
        max_new_tokens=args.turn_tokens,
        max_tool_turns=args.turns,
        beta=args.beta,
        kl_target=0.0,
        missing_eot_penalty=0.0,
        sample_every=20,
        device="cpu",
        loop=PPOLoopConfig(lr=args.lr, warmup_steps=2, save_every=1000, seed=args.seed),
    )
    run(cfg, reward_fn=reward_fn)
    rows = [json.loads(x) for x in (out / args.name / "metrics.jsonl").read_text().splitlines()]
    return {"reward_first": rows[0]["reward"], "reward_last": rows[-1]["reward"], "steps": len(rows)}


def fresh(out: Path) -> list[dict]:
    """Prompts of the train templates and entities that neither the SFT chats nor the RL prompts hold: what the
    models were trained on, in new combinations (the held-out eval changes the wording and the entities too)."""
    from rlhfkit.world.files import stream_rng
    from rlhfkit.world.verifiable import verifiable_records

    seen = set()
    for name in ("verifiable_tools_sft.jsonl", "verifiable_train.jsonl"):
        seen |= {
            json.loads(x)["messages"][0]["content"] for x in (out / "world" / name).read_text().splitlines()
        }
    records = verifiable_records(2000, stream_rng(0, "tool_grpo_fresh"), "train", "vfresh")
    return [r for r in records if r["messages"][0]["content"] not in seen]


def _summary(runs: list[list[bool]], idx: list[int]) -> dict:
    """Greedy accuracy (runs[0]), and pass@1 / pass@k over the k sampled runs (runs[1:]), on the prompts `idx`;
    `mixed_groups`: the share of prompts whose k samples are neither all right nor all wrong (what GRPO's group
    normalization can learn from)."""
    from rlhfkit.evaluate.accuracy import pass_at_k

    k = len(runs) - 1
    right = [sum(run[i] for run in runs[1:]) for i in idx]
    n = max(len(idx), 1)
    return {
        "n": len(idx),
        "greedy": round(sum(runs[0][i] for i in idx) / n, 3),
        "pass1": round(sum(pass_at_k(k, c, 1) for c in right) / n, 3),
        f"pass{k}": round(sum(pass_at_k(k, c, k) for c in right) / n, 3),
        "mixed_groups": round(sum(0 < c < k for c in right) / n, 3),
    }


ARITHMETIC_KINDS = ("price_total", "born_gap", "founded_gap")


def evaluate(args) -> dict:
    """Each split played greedily once, then `--samples` times at temperature 1 (seeds 1..k), with the tools."""
    from rlhfkit.data.chats import load_prompts
    from rlhfkit.evaluate.tool_episodes import tool_stats
    from rlhfkit.generation import SamplingParams, end_of_turn_ids, generate, render_chat
    from rlhfkit.generation.loading import load_for_generation
    from rlhfkit.ppo.environment import run_episodes
    from rlhfkit.verifier import answer_of, verify
    from rlhfkit.world.tools import WORLD_TOOLS

    out = Path(args.out)
    model, tok = load_for_generation(str(out / args.model), device="cpu", dtype="float32")
    results = {}
    for split, records in (
        ("eval", load_prompts(out / "world" / "verifiable_eval.jsonl")),
        ("fresh", fresh(out)),
    ):
        records = records[: args.prompts]
        ids = [tok(render_chat(tok, r["messages"]), add_special_tokens=False)["input_ids"] for r in records]

        def sample(contexts, p):
            return generate(model, contexts, p, pad_token_id=tok.pad_token_id, tokenizer=tok, batch_size=128)

        runs, greedy, sampled = [], None, []
        for s in range(args.samples + 1):
            params = SamplingParams(
                max_new_tokens=args.turn_tokens,
                temperature=0.0 if s == 0 else 1.0,
                stop_token_ids=end_of_turn_ids(tok, model),
                seed=s,
            )
            episodes = run_episodes(
                sample, tok, ids, params, WORLD_TOOLS, args.turns, model.config.max_position_embeddings
            )
            runs.append([verify(e.text, answer_of(r)).correct for e, r in zip(episodes, records)])
            greedy = greedy or episodes
            if s > 0:
                sampled.append(episodes)
        kinds: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            kinds.setdefault(r["kind"], []).append(i)
        arithmetic = [i for i, r in enumerate(records) if r["kind"] in ARITHMETIC_KINDS]
        comparison = [i for i, r in enumerate(records) if r["kind"] not in ARITHMETIC_KINDS]
        results[split] = {
            "all": _summary(runs, list(range(len(records)))),
            "arithmetic": _summary(runs, arithmetic),
            "comparison": _summary(runs, comparison),
            "by_kind": {k: _summary(runs, v) for k, v in sorted(kinds.items())},
            **({"prm_best_of_k": _prm_pick(args.rerank, records, sampled, runs[1:])} if args.rerank else {}),
            "greedy_tools": tool_stats([e.turns for e in greedy]),
            "greedy_verdicts": dict(
                Counter(verify(e.text, answer_of(r)).reason for e, r in zip(greedy, records))
            ),
            "examples": [
                {"question": r["messages"][0]["content"], "turns": e.turns, "answer": e.text}
                for e, r in zip(greedy[:3], records)
            ],
        }
    (out / args.model / "tool_eval.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _prm_pick(prm_dir: str, records: list[dict], sampled: list[list], right: list[list[bool]]) -> dict:
    """Best of the k sampled episodes by a process reward model, as "Let's verify step by step" uses its PRM,
    with the episode's score its weakest call's P(right) ("min") or its calls' mean ("mean"), ties to the
    first: accuracy of the picks, overall and by kind, and how many calls the picks made."""
    from rlhfkit.prm.score import ProcessModel, aggregate_steps

    prm = ProcessModel(prm_dir)
    prompts = [r["messages"] for r in records]
    steps = [prm.step_probabilities(prompts, [e.turns for e in episodes]) for episodes in sampled]
    out = {}
    for how in ("min", "mean"):
        scores = [[aggregate_steps(p, how) for p in episodes] for episodes in steps]
        picks = [max(range(len(sampled)), key=lambda j: (scores[j][i], -j)) for i in range(len(records))]
        hit = [right[j][i] for i, j in enumerate(picks)]
        kinds: dict[str, list[bool]] = {}
        for r, h in zip(records, hit):
            kinds.setdefault(r["kind"], []).append(h)
        out[how] = {
            "accuracy": sum(hit) / len(hit),
            "calls_per_pick": sum(len(steps[j][i]) for i, j in enumerate(picks)) / len(picks),
            "by_kind": {k: sum(v) / len(v) for k, v in sorted(kinds.items())},
        }
    out["calls_per_sample"] = sum(len(p) for episodes in steps for p in episodes) / (
        len(steps) * len(records)
    )
    return out


def compare(args) -> dict:
    """Rewards side by side (`--names`: GRPO runs in --out): per run, the first and last 20 rollouts' verifier
    share (right final answers), world-checked process score and optimized reward, the CPU seconds, the last KL,
    and its evaluation (`eval --model NAME` writes NAME/tool_eval.json). A reward that rises while the
    verifier's share does not is being hacked."""
    from statistics import mean

    out = Path(args.out)
    table = {}
    for name in args.names.split(","):
        curve = [json.loads(x) for x in (out / name / "reward_curve.jsonl").read_text().splitlines()]
        metrics = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
        row = {
            "rollouts": len(curve),
            "cpu_seconds": curve[-1]["cpu_s"],
            "kl_last": metrics[-1].get("kl"),
            **{
                f"{key}_{part}": round(mean(r[key] for r in rows), 4)
                for key in ("verifier", "process", "reward")
                for part, rows in (("first20", curve[:20]), ("last20", curve[-20:]))
            },
        }
        evaluation = out / name / "tool_eval.json"
        if evaluation.exists():
            result = json.loads(evaluation.read_text())
            row["eval"] = {split: result[split]["all"] for split in ("eval", "fresh")}
        table[name] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("prepare", "sft", "grpo", "eval", "compare"))
    parser.add_argument("--out", default="/tmp/tool_grpo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n", type=int, default=8000, help="verifiable tasks (train prompts, tool demonstrations)"
    )
    parser.add_argument(
        "--tool-practice", type=float, default=0.0, help="prepare: share of tool demos on made-up catalogues"
    )
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="sft 1500, grpo 120")
    parser.add_argument("--lr", type=float, default=None, help="sft 2e-3, grpo 1e-4")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6, help="--max-tool-turns")
    parser.add_argument("--turn-tokens", type=int, default=48, help="--max-new-tokens (per turn)")
    parser.add_argument("--epochs", type=int, default=1, help="grpo: passes over each rollout")
    parser.add_argument("--rl-temperature", type=float, default=1.0, help="grpo: sampling temperature")
    parser.add_argument("--beta", type=float, default=0.02, help="grpo: KL coefficient")
    parser.add_argument(
        "--reward",
        default="verifier",
        help="grpo: verifier, verifier+process[=W] (with --process-model: a learned PRM), or rm:FOLDER",
    )
    parser.add_argument(
        "--process-model", default="", help="grpo: a PRM folder that scores the +process term (prm train)"
    )
    parser.add_argument("--name", default="grpo")
    parser.add_argument(
        "--names", default="grpo", help="compare: GRPO runs (folders in --out), comma-separated"
    )
    parser.add_argument("--model", default="sft")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--samples", type=int, default=8, help="eval: episodes at temperature 1 for pass@k")
    parser.add_argument(
        "--rerank", default="", help="eval: also pick the best of the samples by this PRM folder (prm train)"
    )
    args = parser.parse_args()
    defaults = {"sft": (1500, 2e-3), "grpo": (120, 1e-4)}.get(args.phase, (0, 0.0))
    args.steps = defaults[0] if args.steps is None else args.steps
    args.lr = defaults[1] if args.lr is None else args.lr
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    phases = {"prepare": prepare, "sft": sft, "grpo": grpo, "eval": evaluate, "compare": compare}
    result = phases[args.phase](args)
    print(
        json.dumps(
            {
                "phase": args.phase,
                "args": vars(args),
                "seconds": round(time.perf_counter() - t0, 1),
                "cpu": cpu_info(),
                "result": result,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
