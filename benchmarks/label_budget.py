"""What a label is worth: reward-model quality against the number of rankings, their noise and their source.

For each label budget (rankings of K candidates), label source and seed, this trains the pipeline's reward model
(`[reward]` of defaults.toml: the MiniLM backbone; `--reward-option model=sft` for the run's SFT model) on the
first `budget` candidate sets of a demo run, then
measures what matters downstream, with the demo world's gold judge as the truth:

- `bo8_win`: best-of-8 by the reward model against one plain SFT sample, on the held-out evaluation prompts
  (the SFT model's own answers at the evaluation temperature; ties count half). This is the win rate a
  policy that perfectly distilled the reward model's choice among 8 samples would get, so it caps what PPO,
  GRPO or rejection sampling can reach with that reward model at small KL (log 8 - 7/8 = 1.2 nats).
- `pair_accuracy_vs_gold`: how often the reward model orders two of those 8 answers as the gold judge does
  (pairs whose gold scores differ by at least 0.5).

Label sources (`--sources`):
- `annotators`: the simulated annotator pool, one annotator per set (what the pipeline uses);
- `annotators3`: three annotators per set at the same number of rankings (so a third as many sets);
- `gold`: rankings by the gold judge itself (no noise, no length or position bias): the ceiling of labels.

The oracle (best of 8 by the gold judge) is reported too. Budgets beyond the run's 2,000 candidate sets sample
sets for fresh training prompts (`extra_candidates_*.jsonl` in `<run>/label_budget/`, cached). Reward-model
training dominates the time on 2 Zen 4 cores: about 150 s per 1,000 rankings for MiniLM (1 epoch), 50 s for the
SFT backbone (2 epochs).

With `--ensemble N`, each row trains N reward models on the same labels (seeds seed, seed+1000, ...) and also
measures their ensemble: the mean of the members' normalized scores, and mean - k * std (the uncertainty-
penalized reward, a guard against over-optimization).

With `--select entropy,posterior --pool P`, each seed also runs **active selection** against random selection at
the same budgets, all drawing from the same pool of the first P candidate sets (sampled for random prompts, so
the first N are a random choice): the random rows label the first N; an active arm labels the first budget's
sets at random too, then for each next budget adds the sets that the reward model trained on its labels so far
is least sure how to rank, as `rlhfkit reward select --by entropy|posterior` chooses them. Its rows have
`"select"` and the categories of the sets it chose. Every row has the best-of-8 win rate by prompt category.

Usage: python benchmarks/label_budget.py --run runs/demo --budgets 250,500,1000,2000 --seeds 0
       [--sources annotators,annotators3,gold] [--ensemble 3] [--select entropy,posterior --pool 6000]
       [--out docs/results/label_budget.json]
Prints one JSON object per trained reward model as it finishes, then the whole result.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cpu_info import cpu_info

SOURCES = ("annotators", "annotators3", "gold")
PICK_FROM = 8  # best-of-8, as the frontier's `ceiling` and the candidates stage's 6 + 2 sets


def _sft_samples(run: Path, prompts: list[list[dict]], seed: int) -> list[str]:
    """PICK_FROM + 1 answers per prompt from the SFT model (the last one is the baseline), cached in the run."""
    from rlhfkit.evaluate.run import EvalConfig
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

    k = PICK_FROM + 1
    cache = run / "label_budget" / f"sft_samples_seed{seed}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model, tok = load_causal_lm(run / "sft").eval(), load_tokenizer(run / "sft")
    params = SamplingParams(
        max_new_tokens=EvalConfig.max_new_tokens, temperature=EvalConfig.temperature, seed=seed
    )
    texts = [o.text for o in generate_chat(model, tok, [p for p in prompts for _ in range(k)], params)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(texts))
    return texts


def _pipeline_options(stage: str) -> dict:
    from rlhfkit.config import DEFAULTS_FILE, load_toml, stage_table

    return stage_table(load_toml(DEFAULTS_FILE), stage, DEFAULTS_FILE)


def _candidate_sets(run: Path, needed: int) -> list[dict]:
    """The run's candidate sets, then (for budgets beyond them) sets for fresh training prompts of the world,
    sampled from the same SFT model with the pipeline's candidates settings; cached in the run folder."""
    from rlhfkit.config import config_from_options
    from rlhfkit.generation.candidates import CandidatesConfig
    from rlhfkit.generation.candidates import run as sample
    from rlhfkit.world.files import stream_rng, write_rows
    from rlhfkit.world.prompts import prompt_records

    sets = [json.loads(line) for line in (run / "candidates" / "candidates.jsonl").open()]
    if needed <= len(sets):
        return sets
    extra = run / "label_budget" / f"extra_candidates_{needed - len(sets)}.jsonl"
    if not extra.exists():
        prompts = extra.with_suffix(".prompts.jsonl")
        prompts.parent.mkdir(parents=True, exist_ok=True)
        rows = prompt_records(
            needed - len(sets), stream_rng(0, "label_budget"), "train", "lb", allow_repeats=True
        )
        write_rows(prompts, rows)
        options = {
            **_pipeline_options("candidates"),
            "model": str(run / "sft"),
            "prompts": str(prompts),
            "out": str(extra),
        }
        sample(config_from_options(CandidatesConfig, options, "label_budget"))
    return sets + [json.loads(line) for line in extra.open()]


def _labels(records: list[dict], source: str, budget: int, seed: int) -> list[dict]:
    """`budget` rankings of the first candidate sets (a third as many sets with three annotators each)."""
    from rlhfkit.world.annotators import _text, label_candidates
    from rlhfkit.world.judge import score

    if source == "gold":
        out = []
        for rec in records[:budget]:
            gold = [score(rec["prompt"], _text(c), rec.get("meta")).total for c in rec["completions"]]
            ranking = sorted(range(len(gold)), key=lambda i: -gold[i])
            ties = [[i, j] for i in range(len(gold)) for j in range(i + 1, len(gold)) if gold[i] == gold[j]]
            out.append({**rec, "ranking": ranking, "ties": ties})
        return out
    overlap = 3 if source == "annotators3" else 1
    return label_candidates(records[: budget // overlap], overlap=overlap, seed=seed)


def _train_reward_model(run: Path, labels: list[dict], out: Path, seed: int, overrides: dict) -> dict:
    from rlhfkit.config import config_from_options
    from rlhfkit.reward.train import RewardConfig
    from rlhfkit.reward.train import run as train

    data = out / "train.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in labels))
    options = {**_pipeline_options("reward"), **overrides}
    # the pipeline's backbone (`minilm`) unless `--reward-option model=...`; `sft`: the run's SFT model
    backbone = options.pop("model", "sft")
    options = {
        **options,
        "model": str(run / "sft") if backbone == "sft" else backbone,
        "data": str(data),
        "calibration": str(run / "candidates" / "candidates.jsonl"),
        "out": str(out / "rm"),
        "seed": seed,
    }
    start = time.perf_counter()
    train(config_from_options(RewardConfig, options, "label_budget"))
    return {"train_seconds": round(time.perf_counter() - start, 1)}


def _proxy_scores(rm_dir: Path, prompts, texts: list[str]) -> list[float]:
    """The reward model's score of every sampled answer, divided by the model's score std on them (so that the
    members of an ensemble weigh the same)."""
    from rlhfkit.reward.model import default_max_length, load_reward_model, score_conversations

    k = PICK_FROM + 1
    rm, tok = load_reward_model(rm_dir)
    items = [(prompts[i // k], [{"role": "assistant", "content": t}]) for i, t in enumerate(texts)]
    proxy = score_conversations(rm, tok, items, default_max_length(rm, tok, 512), batch_size=64)
    mean = sum(proxy) / len(proxy)
    std = (sum((x - mean) ** 2 for x in proxy) / len(proxy)) ** 0.5 or 1.0
    return [(x - mean) / std for x in proxy]


def _measure(proxy: list[float], categories: list[str], gold: list[float]) -> dict:
    """Best-of-8 by `proxy` against the plain SFT sample, judged by gold (overall and by the prompts'
    `categories`); pair accuracy against gold."""
    k = PICK_FROM + 1
    n_prompts = len(categories)
    wins, picked, agree, pairs = 0.0, 0.0, 0, 0
    by_category: dict[str, list[float]] = {}
    for p in range(n_prompts):
        group = range(p * k, p * k + PICK_FROM)
        best = max(group, key=lambda i: proxy[i])
        baseline = gold[p * k + PICK_FROM]
        win = 1.0 if gold[best] > baseline else 0.5 if gold[best] == baseline else 0.0
        wins += win
        by_category.setdefault(categories[p], []).append(win)
        picked += gold[best]
        for i in group:
            for j in group:
                if i < j and abs(gold[i] - gold[j]) >= 0.5:
                    pairs += 1
                    agree += (proxy[i] - proxy[j]) * (gold[i] - gold[j]) > 0
    return {
        "bo8_win": round(wins / n_prompts, 4),
        "bo8_gold": round(picked / n_prompts, 3),
        "pair_accuracy_vs_gold": round(agree / max(pairs, 1), 4),
        "bo8_win_by_category": {c: round(sum(w) / len(w), 3) for c, w in sorted(by_category.items())},
    }


def _ensemble(members: list[list[float]], penalty: float) -> list[float]:
    """mean - penalty * std across the members' (normalized) scores of each answer."""
    out = []
    for scores in zip(*members):
        mean = sum(scores) / len(scores)
        out.append(mean - penalty * (sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5)
    return out


def _active_rows(run: Path, pool, budgets, seed, overrides, prompts, categories, texts, gold, by: str):
    """Active selection from `pool`: the first budget's sets at random, then each next budget's new sets chosen
    by the reward model trained on the labels so far, as `rlhfkit reward select --by BY` chooses them."""
    from collections import Counter

    from rlhfkit.reward.select import SelectConfig, most_uncertain, uncertainties

    chosen = list(range(budgets[0]))
    for i, budget in enumerate(budgets):
        labels = _labels([pool[j] for j in chosen], "annotators", budget, seed)
        with tempfile.TemporaryDirectory(prefix="label_budget_active_") as tmp:
            trained = _train_reward_model(run, labels, Path(tmp), seed, overrides)
            rm = Path(tmp) / "rm"
            row = {
                "source": "annotators",
                "select": by,
                "budget": budget,
                "sets": budget,
                "seed": seed,
            }
            row.update({**trained, **_measure(_proxy_scores(rm, prompts, texts), categories, gold)})
            row["categories"] = dict(Counter(pool[j].get("category", "?") for j in chosen))
            if i + 1 < len(budgets):
                taken = set(chosen)
                rest = [j for j in range(len(pool)) if j not in taken]
                start = time.perf_counter()
                cfg = SelectConfig(candidates="pool", by=by)
                uncertainty = uncertainties([pool[j] for j in rest], [str(rm)], cfg)
                picked = most_uncertain(uncertainty, budgets[i + 1] - budget)
                row["select_seconds"] = round(time.perf_counter() - start, 1)
                row["uncertainty_picked_vs_pool"] = [
                    round(sum(uncertainty[p] for p in picked) / len(picked), 4),
                    round(sum(uncertainty) / len(uncertainty), 4),
                ]
                chosen += [rest[p] for p in picked]
        yield row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a demo pipeline run folder (sft/, candidates/, world/)")
    ap.add_argument(
        "--budgets", default="250,500,1000,2000", help="rankings per reward model, comma-separated"
    )
    ap.add_argument("--sources", default="annotators,gold", help=f"label sources: {', '.join(SOURCES)}")
    ap.add_argument("--seeds", default="0", help="label and training seeds, comma-separated")
    ap.add_argument(
        "--reward-option",
        action="append",
        default=[],
        metavar="FLAG=VALUE",
        help="change one of the pipeline's reward-model settings, e.g. epochs=4, or model=sft for the run's SFT "
        "model as the backbone (the pipeline's: minilm) (repeatable)",
    )
    ap.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="reward models per row, trained with seeds seed, seed+1000, ... on the same labels; each member is "
        "measured, and their mean score (and mean - k * std for each --ensemble-penalty k)",
    )
    ap.add_argument("--ensemble-penalty", default="1", help="k values for mean - k * std, comma-separated")
    ap.add_argument(
        "--select",
        default="",
        help="comma-separated active-selection arms (entropy, posterior): each also grows the annotators' labels "
        "budget by budget with the sets the current reward model is least sure of, from the same --pool",
    )
    ap.add_argument(
        "--pool", type=int, default=0, help="candidate sets to choose from (default: the largest budget)"
    )
    ap.add_argument("--out", default=None, help="also write the result JSON here")
    args = ap.parse_args()

    from rlhfkit.data.chats import load_prompts
    from rlhfkit.world.judge import score

    run = Path(args.run)
    overrides = dict(option.split("=", 1) for option in args.reward_option)
    budgets = [int(b) for b in args.budgets.split(",")]
    sources = [s for s in args.sources.split(",") if s]  # none: only the --select arms
    unknown = set(sources) - set(SOURCES)
    if unknown:
        ap.error(f"--sources: unknown {sorted(unknown)}; choose from {', '.join(SOURCES)}")
    budgets.sort()
    pool_size = max(args.pool, max(budgets))
    candidates = _candidate_sets(run, pool_size)[:pool_size]
    records = load_prompts(run / "world" / "eval_prompts.jsonl")
    prompts = [r["messages"] for r in records]
    categories = [r.get("category", "?") for r in records]
    k = PICK_FROM + 1
    result: dict = {
        "benchmark": "label_budget",
        "cpu": cpu_info(),
        "run": str(run),
        "eval_prompts": len(prompts),
        "reward_options": overrides,
        "pool": pool_size,
        "rows": [],
    }
    for seed in [int(s) for s in args.seeds.split(",")]:
        texts = _sft_samples(run, prompts, seed)
        gold = [score(prompts[i // k], t, records[i // k].get("meta")).total for i, t in enumerate(texts)]
        oracle = [max(gold[p * k : p * k + PICK_FROM]) for p in range(len(prompts))]
        base = [gold[p * k + PICK_FROM] for p in range(len(prompts))]
        win = sum(1.0 if o > b else 0.5 if o == b else 0.0 for o, b in zip(oracle, base)) / len(prompts)
        result.setdefault("oracle_bo8_win", {})[seed] = round(win, 4)
        result.setdefault("sft_gold", {})[seed] = round(sum(base) / len(base), 3)
        for source in sources:
            for budget in budgets:
                labels = _labels(candidates, source, budget, seed)
                sets = budget // 3 if source == "annotators3" else budget
                row = {"source": source, "budget": len(labels), "sets": sets, "seed": seed}
                members = []
                for m in range(args.ensemble):
                    with tempfile.TemporaryDirectory(prefix="label_budget_") as tmp:
                        trained = _train_reward_model(run, labels, Path(tmp), seed + 1000 * m, overrides)
                        members.append(_proxy_scores(Path(tmp) / "rm", prompts, texts))
                    measured = {**trained, **_measure(members[-1], categories, gold)}
                    if args.ensemble == 1:
                        row.update(measured)
                    else:
                        row.setdefault("members", []).append(measured)
                if args.ensemble > 1:
                    row["ensemble"] = {"mean": _measure(_ensemble(members, 0.0), categories, gold)}
                    for k_std in args.ensemble_penalty.split(","):
                        picks = _ensemble(members, float(k_std))
                        row["ensemble"][f"mean-{k_std}std"] = _measure(picks, categories, gold)
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
        for by in filter(None, args.select.split(",")):
            for row in _active_rows(
                run, candidates, budgets, seed, overrides, prompts, categories, texts, gold, by
            ):
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
