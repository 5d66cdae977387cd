"""Validate the watch rule (`ppo --watch-reward ... --stop-patience N`) against the gold judge on the demo world.

Reads PPO runs made with `--watch-reward` and patience 0 (so they ran to the end and logged, every step, the watch
score, the gold judge's score of the same responses and the KL to the SFT model), and replays the rule offline for
each patience: where it would stop, which step's policy it would keep, and that policy's KL and gold, against the
gold-optimal step (the best step by the gold judge's moving average, which a real user cannot see). All three
series are smoothed with the rule's moving average (one step's 64 episodes are noisy).

Usage: python benchmarks/stop_rule.py RUN_DIR [RUN_DIR ...] [--patience 4,8,12] [--out result.json]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rlhfkit.ppo.stop_rule import StopRule


def _ema(values: list[float]) -> list[float]:
    """The rule's moving average of a logged series (gold, KL), to compare like with like."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else StopRule.smoothing * out[-1] + (1 - StopRule.smoothing) * v)
    return out


def replay(rows: list[dict], patience: int) -> tuple[int, int]:
    """(step it stops at, step whose policy it keeps): the rule itself (`StopRule`) fed the logged watch scores."""
    rule = StopRule(patience)
    no_weights = torch.nn.Module()  # the replay keeps no policy
    for row in rows:
        rule.observe(row["step"], row["watch_score"], no_weights)
        if rule.should_stop:
            break
    return rule.last_step, rule.best_step


def analyse(run: Path, patiences: list[int]) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "watch_score" in r and "gold_reward" in r]
    if not rows:
        raise SystemExit(
            f"{run}: no step logged both watch_score and gold_reward (run PPO with --watch-reward)"
        )
    steps = [r["step"] for r in rows]
    gold, kl = _ema([r["gold_reward"] for r in rows]), _ema([r["kl"] for r in rows])
    at = {s: i for i, s in enumerate(steps)}
    opt = max(range(len(rows)), key=lambda i: gold[i])
    result = {
        "run": str(run),
        "steps": len(rows),
        "gold_optimal": {"step": steps[opt], "gold": round(gold[opt], 3), "kl": round(kl[opt], 2)},
        "final": {"step": steps[-1], "gold": round(gold[-1], 3), "kl": round(kl[-1], 2)},
        "start_gold": round(gold[0], 3),
        "rules": [],
    }
    for patience in patiences:
        stop, kept = replay(rows, patience)
        i = at[kept]
        within = abs(kl[i] - kl[opt]) <= 0.1 * max(kl[opt], 1e-9)
        result["rules"].append(
            {
                "patience": patience,
                "stops_at": stop,
                "keeps_step": kept,
                "kl": round(kl[i], 2),
                "gold": round(gold[i], 3),
                "gold_left": round(gold[opt] - gold[i], 3),
                "within_10pct_of_optimal_kl": within,
            }
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="PPO output folders made with --watch-reward (patience 0)")
    ap.add_argument("--patience", default="4,8,12", help="patience values to replay, comma-separated")
    ap.add_argument("--out", default=None, help="also write the result JSON here")
    args = ap.parse_args()
    patiences = [int(p) for p in args.patience.split(",")]
    runs = [analyse(Path(r), patiences) for r in args.runs]
    summary = {
        p: sum(r["rules"][k]["within_10pct_of_optimal_kl"] for r in runs) for k, p in enumerate(patiences)
    }
    result = {
        "benchmark": "stop_rule",
        "smoothing": StopRule.smoothing,
        "runs": runs,
        "within_10pct_runs": summary,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
