"""Best-of-n with the reward model vs PPO, judged by the demo world's gold judge.

For each held-out evaluation prompt, samples 16 responses from the SFT policy (temperature 1, the sampler that
best-of-n's KL bound is about), scores each with the reward model (proxy) and the gold judge, and for
n = 1, 2, 4, 8, 16 keeps the reward model's favourite of each group of n (16/n disjoint groups, averaged).
Reports mean gold and proxy score per n with the analytic KL of best-of-n (log n - (n-1)/n, an upper bound),
and the PPO policy's gold score and measured KL for comparison at the same KL budget.

Usage: python benchmarks/best_of_n.py --run runs/demo [--max-prompts 500] [--seed 0]
Prints one JSON object; also writes <run>/best_of_n.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

N_VALUES = (1, 2, 4, 8, 16)


def _sample(model_dir: Path, prompts: list[list[dict]], k: int, seed: int) -> list[str]:
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

    model, tok = load_causal_lm(model_dir).eval(), load_tokenizer(model_dir)
    chats = [p for p in prompts for _ in range(k)]
    outs = generate_chat(
        model, tok, chats, SamplingParams(max_new_tokens=128, temperature=1.0, seed=seed), batch_size=64
    )
    return [o.text for o in outs]


def _ppo_kl(ppo_dir: Path) -> float | None:
    path = ppo_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kls = [r["kl"] for r in rows if "kl" in r][-5:]
    return sum(kls) / len(kls) if kls else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--max-prompts", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from rlhfkit.data.chats import load_chats
    from rlhfkit.pipeline.stages import run_path
    from rlhfkit.reward.model import default_max_length, load_reward_model, score_conversations
    from rlhfkit.world import judge_score

    run = Path(args.run)
    records = load_chats(run / "world" / "eval_prompts.jsonl")[: args.max_prompts]
    prompts = [r["messages"] for r in records]
    k = max(N_VALUES)
    texts = _sample(run / "sft", prompts, k, args.seed)
    rm, rm_tok = load_reward_model(run_path(run, "reward"))
    items = [(prompts[i // k], [{"role": "assistant", "content": t}]) for i, t in enumerate(texts)]
    proxy = score_conversations(rm, rm_tok, items, default_max_length(rm, rm_tok, 512), batch_size=32)
    gold = [judge_score(prompts[i // k], t, records[i // k].get("meta")).total for i, t in enumerate(texts)]

    result: dict = {
        "benchmark": "best_of_n",
        "prompts": len(prompts),
        "samples_per_prompt": k,
        "best_of_n": [],
    }
    for n in N_VALUES:
        g_sum = p_sum = 0.0
        count = 0
        for p in range(len(prompts)):
            for start in range(0, k, n):
                idx = range(p * k + start, p * k + start + n)
                best = max(idx, key=lambda i: proxy[i])
                g_sum += gold[best]
                p_sum += proxy[best]
                count += 1
        kl = math.log(n) - (n - 1) / n
        result["best_of_n"].append(
            {
                "n": n,
                "kl_bound": round(kl, 4),
                "gold": round(g_sum / count, 4),
                "proxy": round(p_sum / count, 4),
            }
        )

    if (run / "ppo" / "config.json").exists():
        ppo_texts = _sample(run / "ppo", prompts, 1, args.seed)
        ppo_gold = [judge_score(p, t, r.get("meta")).total for p, t, r in zip(prompts, ppo_texts, records)]
        ppo_items = [(p, [{"role": "assistant", "content": t}]) for p, t in zip(prompts, ppo_texts)]
        ppo_proxy = score_conversations(
            rm, rm_tok, ppo_items, default_max_length(rm, rm_tok, 512), batch_size=32
        )
        kl = _ppo_kl(run / "ppo")
        same_kl = [b for b in result["best_of_n"] if kl is not None and b["kl_bound"] <= kl]
        result["ppo"] = {
            "gold": round(sum(ppo_gold) / len(ppo_gold), 4),
            "proxy": round(sum(ppo_proxy) / len(ppo_proxy), 4),
            "kl_train_last5": round(kl, 3) if kl is not None else None,
            "best_of_n_within_that_kl": same_kl[-1] if same_kl else None,
        }
    (run / "best_of_n.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
