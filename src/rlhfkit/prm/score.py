"""Scoring with a trained process reward model: each step's P(right), and one process score per episode.

`episode_scores` is what replaces the world's step check in `--reward verifier+process --process-model DIR`:
an episode's process score is the PRM's probability for its *weakest* step (the minimum over its tool calls,
as Math-Shepherd and Wang et al. 2024 aggregate step scores: one wrong step spoils a solution), and 0 for an
episode that called no tool. Unlike the world's check (`ppo.process_reward`), it needs no `meta.steps`, so it
scores any prompt; and it can be wrong, which is what "which reward gets hacked" measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from rlhfkit.errors import RlhfkitError


class ProcessModel:
    """A trained PRM folder, loaded once; `episode_scores` scores a batch of episodes."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from rlhfkit.artifacts import read_manifest
        from rlhfkit.reward.model import load_scorer
        from rlhfkit.train.precision import Precision

        if read_manifest(path).get("stage") != "prm":
            raise RlhfkitError(f"{path}: not a process reward model (train one with `rlhfkit prm train`)")
        device = torch.device(device)
        self.model, self.tokenizer, self.max_length = load_scorer(path, device)
        self.bf16 = Precision.of(device, "auto").scorer_bf16  # as it was trained and evaluated (prm.train)

    def step_probabilities(self, prompts: Sequence[Sequence[dict]], turns: Sequence[Sequence[dict]]):
        """P(right) of every tool call of every episode: one list per episode."""
        from rlhfkit.prm.steps import step_texts
        from rlhfkit.reward.model import encode_text, score_ids

        texts = [step_texts(p, t) for p, t in zip(prompts, turns)]
        rows = [encode_text(self.tokenizer, x, self.max_length) for episode in texts for x in episode]
        logits = score_ids(self.model, self.tokenizer, rows, 32, bf16=self.bf16)
        flat = iter(torch.sigmoid(torch.tensor(logits)).tolist())
        return [[next(flat) for _ in episode] for episode in texts]

    def episode_scores(
        self, prompts: Sequence[Sequence[dict]], turns: Sequence[Sequence[dict]], aggregate: str = "min"
    ) -> list[float]:
        """Per episode, the weakest step's P(right) (`aggregate="min"`) or the steps' mean P(right) ("mean");
        0 for an episode without tool calls."""
        return [aggregate_steps(p, aggregate) for p in self.step_probabilities(prompts, turns)]


def aggregate_steps(probabilities: Sequence[float], how: str) -> float:
    """An episode's process score from its steps' P(right): "min" (one wrong step spoils it; an episode with
    more steps has more chances to score low) or "mean" (no penalty for length); 0 without steps."""
    if not probabilities:
        return 0.0
    return min(probabilities) if how == "min" else sum(probabilities) / len(probabilities)
