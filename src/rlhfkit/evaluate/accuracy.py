"""Accuracy and pass@k on verifiable prompts (those that carry an answer), overall and by difficulty.

Accuracy is the share of prompts whose first sampled response (the one the judge scored) the verifier
credits. pass@k is the chance that at least one of k responses is right, estimated without bias from n >= k
samples per prompt with c right (Chen et al., 2021, the HumanEval paper):

    pass@k = 1 - C(n - c, k) / C(n, k)        (1 when n - c < k)

averaged over prompts. `by_difficulty` repeats both per difficulty (a world task's number of steps; prompts
without one count as difficulty 0), `by_kind` per task kind. `verdicts` is the share of first responses per verifier reason, so a
policy that learns to hedge ("12 or 15") or to stop answering shows up as `contradictory` or `no_answer`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from math import comb

from rlhfkit.verifier import VERDICTS, Answer, Verdict, verify


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def verdicts_of(samples: list[list[str]], answers: list[Answer]) -> list[list[Verdict]]:
    return [[verify(text, answer) for text in texts] for texts, answer in zip(samples, answers)]


def _summary(verdicts: list[list[Verdict]], ks: list[int]) -> dict:
    n = min(len(v) for v in verdicts)
    correct = [sum(x.correct for x in v[:n]) for v in verdicts]
    return {
        "n": len(verdicts),
        "accuracy": sum(v[0].correct for v in verdicts) / len(verdicts),
        "pass_at": {str(k): sum(pass_at_k(n, c, k) for c in correct) / len(verdicts) for k in ks if k <= n},
    }


def accuracy_results(
    verdicts: list[list[Verdict]], difficulties: list[int], kinds: list[str] | None = None
) -> dict:
    """One model's numbers: `n`, `accuracy`, `pass_at` {k: rate}, `verdicts` {reason: share of first
    responses}, `samples_per_prompt`, `by_difficulty` {difficulty: {n, accuracy, pass_at}} and, given the
    prompts' `kinds` (a world task's kind), `by_kind` likewise."""
    ks = ks_for(min(len(v) for v in verdicts))
    reasons = Counter(v[0].reason for v in verdicts)
    out = {
        **_summary(verdicts, ks),
        "samples_per_prompt": ks[-1],
        "verdicts": {r: reasons[r] / len(verdicts) for r in VERDICTS},
    }
    groups: dict[int, list[list[Verdict]]] = defaultdict(list)
    for v, d in zip(verdicts, difficulties):
        groups[d].append(v)
    out["by_difficulty"] = {str(d): _summary(groups[d], ks) for d in sorted(groups)}
    if kinds is not None:
        by_kind: dict[str, list[list[Verdict]]] = defaultdict(list)
        for v, kind in zip(verdicts, kinds):
            by_kind[kind].append(v)
        out["by_kind"] = {kind: _summary(by_kind[kind], ks) for kind in sorted(by_kind)}
    return out
