"""Validate the stop rule (`ppo --watch-reward ...` or `--audit-prompts ...`, `--stop-patience N`) against the gold
judge on the demo world.

Reads PPO runs made with `--watch-reward` and patience 0 (so they ran to the end and logged, every step, the watch
score, the gold judge's score of the same responses and the KL to the SFT model), and replays the rule offline for
each patience: where it would stop, which step's policy it would keep, and that policy's KL and gold, against the
gold-optimal step (the best step by the gold judge's moving average, which a real user cannot see). All three
series are smoothed with the rule's moving average (one step's 64 episodes are noisy).

Audited runs (`--audit-prompts`, patience 0, `--audit-keep`) are read as RUN_DIR=EVAL_DIR[,EVAL_DIR...]: each is
`rlhfkit evaluate` of the kept policies (`--model sft=SFT --model step-K=RUN_DIR/audits/step-K ...`, 500 held-out
prompts, gold judge; another `--seed` for each), so the gold curve is the evaluations' mean win rate against SFT
and KL, step by step, as the pipeline measures a policy. The rule is replayed on the logged annotator labels for
every combination of `--pairs` (the first N pairs of each audit: fewer labels), `--every` (every Nth audit of
those logged), `--patience` and `--smoothing`; the target is the issue's: the kept policy's KL within 10% of the
gold-optimal checkpoint's. `--fixed 15,45` adds stopping at fixed steps, for comparison.

Usage: python benchmarks/stop_rule.py RUN_DIR [RUN_DIR ...] [--patience 4,8,12] [--out result.json]
       python benchmarks/stop_rule.py RUN=EVAL,EVAL2 [...] --pairs 64,128 --every 1,2 --patience 6,9
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
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


def gold_curve(eval_dirs: list[Path]) -> dict[int, dict]:
    """step -> the evaluations' win rate against SFT and KL to SFT of the policy kept at that step (0: SFT),
    averaged over the evaluation folders (several evaluation seeds: a less noisy curve)."""
    curve: dict[int, dict] = {0: {"win": 0.5, "kl": 0.0}}
    for eval_dir in eval_dirs:
        results = json.loads((eval_dir / "results.json").read_text())
        kl = results["kl_to_first"]["models"]
        for name in results["models"]:
            if name.startswith("step-"):
                point = curve.setdefault(int(name[5:]), {"win": 0.0, "kl": 0.0})
                point["win"] += results["win_rates"][name]["sft"] / len(eval_dirs)
                point["kl"] += kl[name]["kl"] / len(eval_dirs)
    return curve


def audit_shares(run: Path) -> dict[int, list[float]]:
    """step -> the policy's share of each annotator verdict of that audit, in the logged order."""
    from rlhfkit.ppo.audit import _policy_share

    by_step: dict[int, list[float]] = {}
    for line in (run / "audit_labels.jsonl").read_text().splitlines():
        label = json.loads(line)
        by_step.setdefault(label["meta"]["audit_step"], []).append(_policy_share(label))
    return dict(sorted(by_step.items()))


def audit_wins(shares: dict[int, list[float]], pairs: int) -> dict[int, float]:
    """step -> the policy's share of the first `pairs` verdicts of that audit."""
    return {step: sum(v[:pairs]) / len(v[:pairs]) for step, v in shares.items()}


def replay_audits(
    wins: dict[int, float], every: int, patience: int, smoothing: float
) -> tuple[int, int, int]:
    """(step it stops at, step it keeps, audits it took) for the rule fed every `every`-th logged audit."""
    steps = sorted(wins)[::every]
    rule = StopRule(patience, smoothing)
    no_weights = torch.nn.Module()
    for n, step in enumerate(steps, 1):
        rule.observe(step, wins[step], no_weights)
        if rule.should_stop:
            return step, rule.best_step, n
    return steps[-1], rule.best_step, len(steps)


def analyse_audits(specs: list[str], pairs, everys, patiences, smoothings, fixed=()) -> dict:
    runs = []
    for spec in specs:
        run, evals = spec.split("=", 1)
        run, eval_dirs = Path(run), [Path(e) for e in evals.split(",")]
        curve = gold_curve(eval_dirs)
        opt = max(curve, key=lambda k: curve[k]["win"])
        runs.append({"run": str(run), "evals": evals.split(","), "curve": curve, "optimal": opt})
    shares = {r["run"]: audit_shares(Path(r["run"])) for r in runs}  # each run's labels, read once
    logged = sorted(shares[runs[0]["run"]])
    interval = logged[1] - logged[0] if len(logged) > 1 else 1  # steps between the logged audits
    configs = []
    for n, every, patience, smoothing in itertools.product(pairs, everys, patiences, smoothings):
        rows = []
        for r in runs:
            stop, kept, audits = replay_audits(audit_wins(shares[r["run"]], n), every, patience, smoothing)
            c, o = r["curve"], r["curve"][r["optimal"]]
            rows.append(
                {
                    "stops_at": stop,
                    "keeps_step": kept,
                    "kl": round(c[kept]["kl"], 2),
                    "win": c[kept]["win"],
                    "win_left": round(o["win"] - c[kept]["win"], 3),
                    "labels": audits * n,
                    "within_10pct_of_optimal_kl": abs(c[kept]["kl"] - o["kl"]) <= 0.1 * o["kl"],
                }
            )
        configs.append(
            {
                "pairs": n,
                "every_steps": every * interval,
                "patience": patience,
                "smoothing": smoothing,
                "runs": rows,
                "within": sum(r["within_10pct_of_optimal_kl"] for r in rows),
                "mean_win_left": round(sum(r["win_left"] for r in rows) / len(rows), 3),
            }
        )
    for step in fixed:  # no rule: a fixed number of steps, for comparison
        rows = []
        for r in runs:
            c, o = r["curve"], r["curve"][r["optimal"]]
            kept = min(c, key=lambda k: abs(k - step))
            within = abs(c[kept]["kl"] - o["kl"]) <= 0.1 * o["kl"]
            rows.append(
                {"keeps_step": kept, "win_left": round(o["win"] - c[kept]["win"], 3), "within": within}
            )
        configs.append(
            {
                "fixed_steps": step,
                "runs": rows,
                "within": sum(r["within"] for r in rows),
                "mean_win_left": round(sum(r["win_left"] for r in rows) / len(rows), 3),
            }
        )
    for r in runs:
        r["optimal"] = {"step": r["optimal"], **r["curve"][r["optimal"]]}
        r["curve"] = {
            str(k): {"win": v["win"], "kl": round(v["kl"], 2)} for k, v in sorted(r["curve"].items())
        }
    return {"benchmark": "stop_rule_audit", "runs": runs, "configs": configs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs", nargs="+", help="PPO output folders made with --watch-reward (patience 0), or RUN=EVAL"
    )
    ap.add_argument("--patience", default="4,8,12", help="patience values to replay, comma-separated")
    ap.add_argument("--pairs", default="128", help="audits: pairs per audit to replay, comma-separated")
    ap.add_argument("--every", default="1", help="audits: replay every Nth logged audit, comma-separated")
    ap.add_argument("--smoothing", default="0.5", help="audits: the rule's EMA weights, comma-separated")
    ap.add_argument("--fixed", default="", help="audits: also score stopping at these steps, comma-separated")
    ap.add_argument("--out", default=None, help="also write the result JSON here")
    args = ap.parse_args()
    patiences = [int(p) for p in args.patience.split(",")]
    if all("=" in r for r in args.runs):
        result = analyse_audits(
            args.runs,
            [int(x) for x in args.pairs.split(",")],
            [int(x) for x in args.every.split(",")],
            patiences,
            [float(x) for x in args.smoothing.split(",")],
            [int(x) for x in args.fixed.split(",") if x],
        )
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
        return
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
