"""Bai et al.'s hybrid preference data (2022, "Constitutional AI", section 4): people's rankings teach
helpfulness, the CAI labeler's AI labels teach harmlessness.

The CAI labeler compares the same candidates on the harmful and benign-look-alike prompts only
(`HARMLESSNESS_CATEGORIES`, `rlhfkit cai label --categories`); the hybrid reward model trains on those AI labels
plus the people's rankings of every other prompt, and is measured on the people's held-out rankings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HARMLESSNESS_CATEGORIES = ("harmful", "benign_risky")


def write_hybrid_split(human: str | Path, hybrid: str | Path) -> None:
    """hybrid/train.jsonl: the people's rankings of the helpfulness prompts (human/train.jsonl) + the AI labels
    of the harmlessness prompts (hybrid/ai.jsonl); hybrid/eval.jsonl: the people's held-out rankings of every
    prompt (human/eval.jsonl: how well the hybrid RM agrees with people)."""
    human, hybrid = Path(human), Path(hybrid)
    people = (human / "train.jsonl").read_text(encoding="utf-8").splitlines()
    helpful = [ln for ln in people if json.loads(ln).get("category") not in HARMLESSNESS_CATEGORIES]
    ai = (hybrid / "ai.jsonl").read_text(encoding="utf-8").splitlines()
    (hybrid / "train.jsonl").write_text("".join(ln + "\n" for ln in helpful + ai), encoding="utf-8")
    shutil.copyfile(human / "eval.jsonl", hybrid / "eval.jsonl")
