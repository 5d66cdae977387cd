"""Reward-model evaluation on held-out comparisons.

Reported (as one JSON-able dict):
- `accuracy`: share of decisive judged pairs (not ties) where the preferred completion scores higher
  (an exact draw counts one half); also `by_category` and `by_annotator`, each with its pair count;
- `loss`: the mean training loss per pair (Bradley-Terry / soft cross-entropy, ties included): a proper
  scoring rule, so it rewards calibrated differences, not just their signs;
- `ece`: expected calibration error of P(preferred) = sigmoid(r_a - r_b): decisive pairs are binned by the
  model's confidence sigmoid(|r_a - r_b|) into equal-width bins over [0.5, 1]; ECE is the pair-weighted mean
  gap between a bin's confidence and how often (soft labels: with what probability) the favoured side won;
- `scores`: the distribution of scores over all completions (with a histogram), of the top completion of each
  comparison (pair: chosen; ranking: best) and of the bottom one (rejected; worst);
- `tie_abs_diff`: mean |r_a - r_b| over tied pairs, when there are ties.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from rlhfkit.data.comparisons import ComparisonGroup, JudgedPair
from rlhfkit.reward.model import encode, score_ids


def score_groups(
    model,
    tokenizer,
    groups: list[ComparisonGroup],
    max_length: int,
    batch_size: int = 16,
    bf16: bool = False,
) -> list[list[float]]:
    """The normalized score of every completion of every group, in group order (`bf16`: as in `score_ids`)."""
    rows, sizes = [], []
    for g in groups:
        rows.extend(encode(tokenizer, g.prompt, c, max_length) for c in g.completions)
        sizes.append(len(g.completions))
    flat = score_ids(model, tokenizer, rows, batch_size, bf16)
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out


def pair_loss_value(diff: float, target: float, margin: float) -> float:
    """The training loss of one pair as a float: -(p log s(d - m) + (1 - p) log s(m - d))."""
    z = diff - margin
    log_sig = -math.log1p(math.exp(-z)) if z > -30 else z
    log_sig_neg = -math.log1p(math.exp(z)) if z < 30 else -z
    return -(target * log_sig + (1 - target) * log_sig_neg)


def _oriented(pair: JudgedPair) -> tuple[int, int, float]:
    """(favoured, other, P(favoured wins)) with the probability at least 0.5."""
    if pair.target < 0.5:
        return pair.worse, pair.better, 1 - pair.target
    return pair.better, pair.worse, pair.target


def distribution(values: list[float], histogram_bins: int = 0) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [5, 25, 50, 75, 95])
    out = {
        "n": len(a),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "p05": float(q[0]),
        "p25": float(q[1]),
        "p50": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max": float(a.max()),
    }
    if histogram_bins:
        counts, edges = np.histogram(a, bins=histogram_bins)
        out["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return out


def expected_calibration_error(confidence: list[float], outcome: list[float], bins: int = 10) -> float:
    """Pair-weighted mean |confidence - outcome| per equal-width confidence bin over [0.5, 1]."""
    if not confidence:
        return float("nan")
    conf, won = np.asarray(confidence), np.asarray(outcome)
    index = np.minimum(((conf - 0.5) / 0.5 * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = index == b
        if sel.any():
            total += sel.sum() * abs(conf[sel].mean() - won[sel].mean())
    return float(total / len(conf))


def comparison_metrics(groups: list[ComparisonGroup], scores: list[list[float]], bins: int = 10) -> dict:
    """All evaluation numbers from the groups and their completions' scores (see the module docstring)."""
    correct: dict[str, list[float]] = defaultdict(list)  # "all", "category:x", "annotator:y"
    losses, confidence, outcome, tie_gaps, top, bottom = [], [], [], [], [], []
    for g, s in zip(groups, scores):
        decisive = [_oriented(p) for p in g.pairs if not p.is_tie]
        for p in g.pairs:
            losses.append(pair_loss_value(s[p.better] - s[p.worse], p.target, p.margin))
            if p.is_tie:
                tie_gaps.append(abs(s[p.better] - s[p.worse]))
        for fav, other, prob in decisive:
            diff = s[fav] - s[other]
            hit = 1.0 if diff > 0 else 0.5 if diff == 0 else 0.0
            for key in ("all", f"category:{g.category or '(none)'}", f"annotator:{g.annotator or '(none)'}"):
                correct[key].append(hit)
            confidence.append(1 / (1 + math.exp(-abs(diff))))
            outcome.append(prob if diff >= 0 else 1 - prob)
        favoured = {f for f, _, _ in decisive}
        disfavoured = {o for _, o, _ in decisive}
        top.extend(s[i] for i in favoured - disfavoured)
        bottom.extend(s[i] for i in disfavoured - favoured)

    def breakdown(prefix: str) -> dict:
        return {
            k[len(prefix) :]: {"accuracy": float(np.mean(v)), "pairs": len(v)}
            for k, v in sorted(correct.items())
            if k.startswith(prefix)
        }

    result = {
        "comparisons": len(groups),
        "pairs": len(losses),
        "decisive_pairs": len(correct["all"]),
        "accuracy": float(np.mean(correct["all"])) if correct["all"] else float("nan"),
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "ece": expected_calibration_error(confidence, outcome, bins),
        "by_category": breakdown("category:"),
        "by_annotator": breakdown("annotator:"),
        "scores": {
            "all": distribution([x for s in scores for x in s], histogram_bins=10),
            "top": distribution(top),
            "bottom": distribution(bottom),
        },
    }
    if tie_gaps:
        result["ties"] = len(tie_gaps)
        result["tie_abs_diff"] = float(np.mean(tie_gaps))
    return result


def evaluate_reward_model(
    model, tokenizer, groups: list[ComparisonGroup], max_length: int, batch_size: int = 16
) -> dict:
    return comparison_metrics(groups, score_groups(model, tokenizer, groups, max_length, batch_size))
