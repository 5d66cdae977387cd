"""A ranking of models: Bradley-Terry strengths on the Elo scale, with bootstrap confidence intervals.

Bradley-Terry says model i beats model j with probability

    P(i > j) = p_i / (p_i + p_j) = sigmoid(theta_i - theta_j),     theta = log p

Given W[i, j] = wins of i over j (ties count half to each side; `winrates.outcome`), the maximum-likelihood
strengths maximise  sum_{i != j} W[i, j] * log(p_i / (p_i + p_j)).  We find them with Hunter's (2004)
minorize-maximize update, which increases the likelihood at every step and needs no step size:

    p_i <- (sum_j W[i, j]) / (sum_{j != i} (W[i, j] + W[j, i]) / (p_i + p_j))

then rescale so the mean log-strength is 0. A model that wins every game has no finite MLE, so `prior`
virtual games per pair, split evenly, are added (a weak pull toward equal strength; 0 turns it off).

The Elo scale is the same model in other units: elo_i = 1000 + 400 / ln(10) * theta_i, so a 400-point gap
means 10:1 odds and the mean model sits at 1000.

Confidence intervals: resample the *prompts* with replacement (every model answered the same prompts, so a
prompt is the unit of independent evidence), refit, and take percentiles of each model's Elo. The
resampling draws from one seeded numpy generator, so the same seed gives the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

ELO_SCALE = 400 / math.log(10)
ELO_CENTER = 1000.0


def outcome_tensor(scores: np.ndarray, tie_margin: float = 0.0) -> np.ndarray:
    """O[i, j, k] = outcome of model i against model j on prompt k (1 win, 0.5 tie, 0 loss; 0 on i == j)."""
    diff = scores[:, None, :] - scores[None, :, :]
    out = np.where(np.abs(diff) <= tie_margin, 0.5, (diff > 0).astype(np.float64))
    idx = np.arange(scores.shape[0])
    out[idx, idx, :] = 0.0
    return out


def fit_bradley_terry(
    wins: np.ndarray, prior: float = 1.0, tol: float = 1e-10, max_iter: int = 20_000
) -> np.ndarray:
    """Log-strengths theta (mean 0) from a win matrix W[i, j] (see the module docstring)."""
    w = np.asarray(wins, dtype=np.float64).copy()
    m = w.shape[0]
    if m == 1:
        return np.zeros(1)
    off = ~np.eye(m, dtype=bool)
    w[off] += prior / 2
    games = w + w.T
    total_wins = w.sum(axis=1)
    p = np.ones(m)
    for _ in range(max_iter):
        denom = np.where(off, games / (p[:, None] + p[None, :]), 0.0).sum(axis=1)
        new = np.where(denom > 0, total_wins / np.maximum(denom, 1e-300), p)
        new = np.maximum(new, 1e-300)
        new /= math.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    theta = np.log(p)
    return theta - theta.mean()


def to_elo(theta: np.ndarray) -> np.ndarray:
    return ELO_CENTER + ELO_SCALE * (theta - theta.mean())


def rank_models(
    scores: Mapping[str, Sequence[float]],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    prior: float = 1.0,
    tie_margin: float = 0.0,
    confidence: float = 0.95,
) -> list[dict]:
    """Models from strongest to weakest: name, theta, elo, elo_low, elo_high, rank, mean_score.

    `scores[name][k]` is the judge's score of that model's response to prompt k (same prompts for all).
    """
    names = list(scores)
    matrix = np.asarray([list(scores[n]) for n in names], dtype=np.float64)
    return rank_outcomes(
        names,
        outcome_tensor(matrix, tie_margin),
        matrix,
        n_bootstrap=n_bootstrap,
        seed=seed,
        prior=prior,
        confidence=confidence,
    )


def rank_outcomes(
    names: Sequence[str],
    outcomes: np.ndarray,
    matrix: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    prior: float = 1.0,
    confidence: float = 0.95,
) -> list[dict]:
    """`rank_models` from an outcome tensor O[i, j, k] (model i against j on prompt k: 1, 0.5 or 0), as a
    pairwise judge gives it directly; `matrix[i, k]` is model i's score on prompt k (for `mean_score`)."""
    n_prompts = outcomes.shape[2]
    theta = fit_bradley_terry(outcomes.sum(axis=2), prior)
    elo = to_elo(theta)

    low, high = elo.copy(), elo.copy()
    if n_bootstrap > 0 and n_prompts > 0 and len(names) > 1:
        rng = np.random.default_rng(seed)
        samples = np.empty((n_bootstrap, len(names)))
        for b in range(n_bootstrap):
            weights = np.bincount(rng.integers(0, n_prompts, n_prompts), minlength=n_prompts)
            samples[b] = to_elo(fit_bradley_terry(outcomes @ weights, prior))
        alpha = (1 - confidence) / 2
        low, high = np.quantile(samples, alpha, axis=0), np.quantile(samples, 1 - alpha, axis=0)

    rows = [
        {
            "model": name,
            "theta": float(theta[i]),
            "elo": float(elo[i]),
            "elo_low": float(min(low[i], elo[i])),
            "elo_high": float(max(high[i], elo[i])),
            "mean_score": float(matrix[i].mean()) if n_prompts else float("nan"),
        }
        for i, name in enumerate(names)
    ]
    rows.sort(key=lambda r: -r["elo"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows
