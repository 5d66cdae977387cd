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


def encode_text(tokenizer, text: str, max_length: int) -> list[int]:
    """Token ids of a step text with the tokenizer's own special tokens, cut from the left to `max_length`
    (the step being judged is at the end); a leading special token ([CLS]) is kept."""
    ids = tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    if len(ids) <= max_length:
        return ids
    head = [i for i in ids[:1] if i in tokenizer.all_special_ids]
    return head + ids[-(max_length - len(head)) :]


def logits_of(
    model, tokenizer, rows: Sequence[list[int]], batch_size: int = 32, bf16: bool = False
) -> list[float]:
    """The head's raw logits for pre-tokenized rows (order kept); `bf16`: under a CPU bf16 autocast."""
    from rlhfkit.reward.model import score_ids

    return score_ids(model, tokenizer, rows, batch_size, bf16=bf16) if rows else []


class ProcessModel:
    """A trained PRM folder, loaded once; `episode_scores` scores a batch of episodes."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from rlhfkit.artifacts import read_manifest
        from rlhfkit.reward.model import load_scorer

        if read_manifest(path).get("stage") != "prm":
            raise RlhfkitError(f"{path}: not a process reward model (train one with `rlhfkit prm train`)")
        from rlhfkit.train.precision import Precision

        device = torch.device(device)
        self.model, self.tokenizer, self.max_length = load_scorer(path, device)
        self.bf16 = Precision.of(device, "auto").scorer_bf16  # as it was trained and evaluated (prm.train)

    def step_probabilities(self, prompts: Sequence[Sequence[dict]], turns: Sequence[Sequence[dict]]):
        """P(right) of every tool call of every episode: one list per episode."""
        from rlhfkit.prm.steps import step_texts

        texts = [step_texts(p, t) for p, t in zip(prompts, turns)]
        rows = [encode_text(self.tokenizer, x, self.max_length) for episode in texts for x in episode]
        logits = logits_of(self.model, self.tokenizer, rows, bf16=self.bf16)
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
