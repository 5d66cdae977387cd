"""Head-to-head win rates: every pair of models, the same prompts, one judge.

On each prompt model A *wins* against B when its score is higher by more than `tie_margin`, *loses* when it
is lower by more than that, and *ties* otherwise. The win rate of A over B is

    win_rate(A, B) = (wins + ties / 2) / prompts

so win_rate(A, B) + win_rate(B, A) = 1 and 0.5 means "indistinguishable". Ties count half, as in Chatbot
Arena and AlpacaEval; a judge with coarse scores (the gold judge rounds to 4 decimals, short replies often
score the same) would otherwise make both models look worse than they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rlhfkit.errors import RlhfkitError


@dataclass(frozen=True)
class PairCounts:
    """How model A fared against model B over the shared prompts."""

    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float:
        return (self.wins + 0.5 * self.ties) / self.n if self.n else float("nan")

    def as_dict(self) -> dict:
        return {"wins": self.wins, "ties": self.ties, "losses": self.losses, "win_rate": self.win_rate}


def outcome(a: float, b: float, tie_margin: float = 0.0) -> float:
    """1 if score `a` beats `b`, 0.5 for a tie (|a - b| <= tie_margin), 0 if it loses."""
    if abs(a - b) <= tie_margin:
        return 0.5
    return 1.0 if a > b else 0.0


def head_to_head(a: Sequence[float], b: Sequence[float], tie_margin: float = 0.0) -> PairCounts:
    """Wins, ties and losses of the scores `a` against `b`, prompt by prompt."""
    if len(a) != len(b):
        raise RlhfkitError(f"win rates: expected scores on the same prompts, got {len(a)} and {len(b)}")
    results = [outcome(x, y, tie_margin) for x, y in zip(a, b)]
    return PairCounts(results.count(1.0), results.count(0.5), results.count(0.0))


def pairwise_counts(
    scores: Mapping[str, Sequence[float]], tie_margin: float = 0.0
) -> dict[str, dict[str, PairCounts]]:
    """{A: {B: counts of A against B}} for every ordered pair of distinct models."""
    names = list(scores)
    return {a: {b: head_to_head(scores[a], scores[b], tie_margin) for b in names if b != a} for a in names}


def counts_from_outcomes(names: Sequence[str], outcomes) -> dict[str, dict[str, PairCounts]]:
    """`pairwise_counts` from an outcome tensor O[i, j, k] (1 win, 0.5 tie, 0 loss of model i against j on
    prompt k; `ranking.outcome_tensor`, or a pairwise judge's verdicts)."""
    return {
        a: {
            b: PairCounts(
                int((outcomes[i][j] == 1.0).sum()),
                int((outcomes[i][j] == 0.5).sum()),
                int((outcomes[i][j] == 0.0).sum()),
            )
            for j, b in enumerate(names)
            if j != i
        }
        for i, a in enumerate(names)
    }


def win_rate_matrix(
    scores: Mapping[str, Sequence[float]], tie_margin: float = 0.0
) -> dict[str, dict[str, float]]:
    """{A: {B: win rate of A over B}} for every ordered pair of distinct models."""
    counts = pairwise_counts(scores, tie_margin)
    return {a: {b: c.win_rate for b, c in row.items()} for a, row in counts.items()}


def compared_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(before, model) pairs worth a headline: each model against the one listed before it, and each later
    model against the second as well (the pipeline's order is base, sft, then the aligned models)."""
    pairs = list(zip(names, names[1:]))
    return pairs + [(names[1], cur) for cur in names[3:]]
