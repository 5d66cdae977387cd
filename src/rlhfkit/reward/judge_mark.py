"""The mark that makes a reward-model folder an evaluation-only judge, and the refusal that reads it.

`rlhfkit reward judge` writes `judge.json` into its output before it trains, so no state of the folder is an
unmarked reward model. Everything that optimizes against a reward (PPO/RLOO/GRPO, hence online's rounds;
rejection sampling; best-of-n candidates) loads it through `reward.model.load_scorer(..., optimize=True)`,
which refuses a marked folder: a judge that was optimized against no longer measures "better" (GUIDE.md,
"Judges"). `evaluate --judge reward:DIR` and `reward eval|score` read it as any reward model.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.errors import RlhfkitError

JUDGE_FILE = "judge.json"


def is_judge(folder: str | Path) -> bool:
    return (Path(folder) / JUDGE_FILE).is_file()


def refuse_judge(folder: str | Path, flag: str = "--reward") -> None:
    """One-line error when `folder` is a judge: it may score evaluations, never a policy's training."""
    if is_judge(folder):
        raise RlhfkitError(
            f"{flag} {folder}: this reward model is a judge ({JUDGE_FILE}), for evaluation only; train "
            "against a reward model from `rlhfkit reward train` and judge with it in `rlhfkit evaluate`"
        )
