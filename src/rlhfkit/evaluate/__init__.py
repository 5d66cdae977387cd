"""Evaluation: sample every model on the same held-out prompts, judge the responses, compare the models.

    from rlhfkit.evaluate import EvalConfig, run, write_report
    results = run(EvalConfig(models={"sft": "runs/demo/sft", "rs": "runs/demo/rs"},
                             prompts="runs/demo/world/eval_prompts.jsonl", out="runs/demo/evaluate"))
    write_report("runs/demo")  # runs/demo/report.html

Pieces, one job each: `judges` (gold judge or a reward model, batched), `winrates` (head-to-head, ties half),
`ranking` (Bradley-Terry strengths, Elo scale, bootstrap intervals), `probes` (behaviour rates from the gold
judge's parts), `run` (generate, score, write `results.json` and `responses.jsonl`), `rundata` (read a run
folder leniently), `plots` (matplotlib PNGs), `report` (the static `report.html`), `commands` (the CLI).
"""

from rlhfkit.evaluate.report import write_report
from rlhfkit.evaluate.run import EvalConfig, headline_metrics, run

__all__ = ["EvalConfig", "headline_metrics", "run", "write_report"]
