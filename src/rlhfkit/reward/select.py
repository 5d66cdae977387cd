"""`rlhfkit reward select`: send annotators the candidate sets the reward model is least sure how to rank.

A label teaches a reward model most where it cannot yet tell the responses apart. Under Bradley-Terry the
model gives each pair (i, j) of a candidate set a preference p = sigmoid(r_i - r_j). Its reward models are
calibrated (`val_ece` in the training metrics), so p is the model's own belief about what an annotator will
say, and the binary entropy H(p) is how much that verdict is expected to tell it: nothing at p = 0 or 1,
log 2 nats at p = 1/2. A set's **uncertainty** is the mean entropy over its pairs.

Entropy cannot tell a pair the model has not learnt from a pair no label will settle (two equally good answers,
a noisy kind of question): both sit near p = 1/2. Two ways to score what labels *can* teach, the disagreement
between plausible reward models (BALD, Houlsby et al. 2011: the entropy of their mean preference minus their
mean entropy, averaged over pairs):

- `--model A,B,C`: an ensemble; the members are the plausible models.
- `--by posterior` (one model): the plausible models are scalar heads drawn from a Laplace approximation of the
  head's posterior given the labels the model was trained on (the comparisons named in its rlhfkit.json):
  covariance (sum over labelled pairs of p(1-p) d d^T + prior I)^-1, d the difference of the two responses'
  head inputs. A pair's preference is then uncertain by d^T Cov d on top of its mean; the expectation over it
  is taken at 16 fixed normal quantiles, so the choice is deterministic. Responses unlike anything labelled
  score high; look-alikes of many labelled pairs score low, however close their scores.

Selection is greedy and deterministic: the `count` most uncertain sets of the pool, written most uncertain
first (so a campaign that stops early has labelled the most useful part), each with its `uncertainty`.
Measured against random selection at the same label budget: `benchmarks/label_budget.py --select`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.config import require
from rlhfkit.errors import RlhfkitError

BY = ("entropy", "posterior")


@dataclass
class SelectConfig:
    """`rlhfkit reward select`."""

    candidates: str = ""  # the pool: candidates JSONL, as `rlhfkit generate` writes
    model: str = ""  # reward model folder; several, comma-separated, score by their disagreement
    count: int = 0  # candidate sets to keep for labelling
    out: str = ""  # the kept sets, most uncertain first, each with its `uncertainty`
    rest: str | None = None  # also write the sets not kept here (pool order)
    by: str = "entropy"  # one model's uncertainty: "entropy" of its pair preferences, or "posterior": the
    # disagreement of reward heads its training labels allow (module doc); several models: their disagreement
    prior: float = 1.0  # with --by posterior: the head weights' prior precision
    max_length: int | None = None  # tokens per conversation (default: each model's training value)
    batch_size: int = 32  # conversations per forward pass
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    dtype: str = "auto"  # the reward models' weights: auto, float32, bfloat16, float16


def _binary_entropy(q: torch.Tensor) -> torch.Tensor:
    q = q.clamp(1e-12, 1 - 1e-12)
    return -(q * q.log() + (1 - q) * (1 - q).log())


def _pair_differences(x: torch.Tensor) -> torch.Tensor:
    """x[i] - x[j] for every pair i < j of the rows of `x` (a set's scores, or its responses' head inputs)."""
    i, j = torch.triu_indices(len(x), len(x), 1)
    return x[i] - x[j]


def set_uncertainty(member_scores: list[list[float]]) -> float:
    """How little the reward model(s) know about one candidate set's ranking, in nats.

    `member_scores[m][i]`: member m's score of completion i. One member: the mean binary entropy of its pairwise
    preferences. Several: the mean over pairs of H(mean preference) - mean H(preference) (their disagreement)."""
    if len(member_scores[0]) < 2:
        return 0.0
    prefs = torch.sigmoid(
        _pair_differences(torch.tensor(member_scores, dtype=torch.float64).T)
    )  # [pair, member]
    value = _binary_entropy(prefs.mean(-1))
    if prefs.shape[1] > 1:
        value = value - _binary_entropy(prefs).mean(-1)
    return float(value.mean())


def most_uncertain(uncertainty: list[float], count: int) -> list[int]:
    """Indices of the `count` most uncertain sets, most uncertain first (ties: pool order)."""
    return sorted(range(len(uncertainty)), key=lambda i: (-uncertainty[i], i))[:count]


def _items(records: list[dict], path: str) -> list[tuple[list[dict], list[dict]]]:
    from rlhfkit.world.labels import response_text

    return [
        (rec["prompt"], [{"role": "assistant", "content": response_text(c, path, 0, "completions")}])
        for rec in records
        for c in rec["completions"]
    ]


def _split(flat: list, sizes: list[int]) -> list[list]:
    """`flat` cut into consecutive parts of `sizes` (one per candidate set or labelled group)."""
    out, start = [], 0
    for size in sizes:
        out.append(flat[start : start + size])
        start += size
    return out


def _per_set(records: list[dict], flat: list) -> list[list]:
    return _split(flat, [len(rec["completions"]) for rec in records])


def _scorer(path: str, cfg: SelectConfig):
    from rlhfkit.device import pick_device, pick_dtype
    from rlhfkit.reward.model import load_scorer
    from rlhfkit.train.precision import Precision

    device = pick_device(cfg.device)
    bf16 = Precision.of(device, cfg.dtype).scorer_bf16  # as the reward models were trained and are used
    dtype = pick_dtype(cfg.dtype, device)
    return (*load_scorer(path, device, cfg.max_length, dtype=dtype, optimize=True), bf16)


def score_pool(records: list[dict], models: list[str], cfg: SelectConfig) -> list[list[list[float]]]:
    """`[set][member][completion]` scores of every completion of every set by every reward model."""
    from rlhfkit.reward.model import score_conversations

    items = _items(records, cfg.candidates)
    per_member = []
    for path in models:
        model, tokenizer, max_length, bf16 = _scorer(path, cfg)
        per_member.append(
            score_conversations(
                model, tokenizer, items, max_length, cfg.batch_size, bf16, progress="select: scoring the pool"
            )
        )
    return [list(by_set) for by_set in zip(*(_per_set(records, scores) for scores in per_member))]


# 16 quantiles of the standard normal: the expectation over a pair's uncertain score difference
_QUANTILES = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(16, dtype=torch.float64) + 0.5) / 16)


def pair_disagreement(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """BALD of Bradley-Terry pairs whose score difference is Normal(mean, var): H(E p) - E H(p), in nats."""
    p = torch.sigmoid(mean[:, None] + var.clamp_min(0).sqrt()[:, None] * _QUANTILES.to(mean.dtype))
    return _binary_entropy(p.mean(-1)) - _binary_entropy(p).mean(-1)


def head_covariance(features: list[list[torch.Tensor]], weight: torch.Tensor, prior: float) -> torch.Tensor:
    """Laplace covariance of a Bradley-Terry head over `features[set][completion]` (every pair of each set
    labelled): (sum of p(1-p) d d^T + prior I)^-1, p = sigmoid(weight . d)."""
    dim = weight.numel()
    precision = prior * torch.eye(dim, dtype=torch.float64)
    for group in features:
        d = _pair_differences(torch.stack(group).double())
        p = torch.sigmoid(d @ weight.double())
        precision += (d * (p * (1 - p))[:, None]).T @ d
    return torch.linalg.inv(precision)


def posterior_uncertainty(records: list[dict], model_dir: str, cfg: SelectConfig) -> list[float]:
    """Each set's mean pair disagreement under the Laplace posterior of `model_dir`'s head (module doc)."""
    from rlhfkit.artifacts import read_manifest
    from rlhfkit.data.comparisons import load_comparisons
    from rlhfkit.reward.model import scalar_head, score_conversations

    labelled = (read_manifest(model_dir).get("config") or {}).get("data")
    if not labelled or not Path(labelled).is_file():
        raise RlhfkitError(
            f"--by posterior: {model_dir}/rlhfkit.json names no comparisons file it was trained on "
            f"(config.data: {labelled!r}) that exists here"
        )
    model, tokenizer, max_length, bf16 = _scorer(model_dir, cfg)
    weight = scalar_head(model).weight.detach().float().reshape(-1).cpu()
    groups = load_comparisons(labelled)
    seen: list = []
    items = [(g.prompt, c) for g in groups for c in g.completions]
    progress = "select: reading the labelled sets"
    score_conversations(model, tokenizer, items, max_length, cfg.batch_size, bf16, seen, progress)
    cov = head_covariance(_split(seen, [len(g.completions) for g in groups]), weight, cfg.prior)
    feats: list = []
    pool_items = _items(records, cfg.candidates)
    progress = "select: scoring the pool"
    scores = score_conversations(
        model, tokenizer, pool_items, max_length, cfg.batch_size, bf16, feats, progress
    )
    out = []
    for set_scores, set_feats in zip(_per_set(records, scores), _per_set(records, feats)):
        d = _pair_differences(torch.stack(set_feats).double())
        mean = _pair_differences(torch.tensor(set_scores, dtype=torch.float64))
        out.append(float(pair_disagreement(mean, ((d @ cov) * d).sum(-1)).mean()))
    return out


def uncertainties(records: list[dict], models: list[str], cfg: SelectConfig) -> list[float]:
    """Each set's uncertainty as `cfg.by` and the number of models define it (module doc)."""
    if cfg.by not in BY:
        raise RlhfkitError(f"--by: expected one of {', '.join(BY)}, got '{cfg.by}'")
    if cfg.by == "posterior":
        if len(models) != 1:
            raise RlhfkitError(
                "--by posterior reads one reward model; an ensemble scores by its disagreement"
            )
        return posterior_uncertainty(records, models[0], cfg)
    return [set_uncertainty(s) for s in score_pool(records, models, cfg)]


def run(cfg: SelectConfig) -> Path:
    """Score the pool, keep the `count` most uncertain sets; return the kept sets' file."""
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.world.labels import read_candidates

    require(cfg, candidates="the pool of candidate sets", model="a reward model folder", out="output JSONL")
    records = read_candidates(cfg.candidates)
    if not 1 <= cfg.count <= len(records):
        raise RlhfkitError(f"--count {cfg.count}: {cfg.candidates} holds {len(records)} candidate sets")
    models = [m.strip() for m in cfg.model.split(",") if m.strip()]
    for path in models:
        if not Path(path).is_dir():
            raise RlhfkitError(f"--model: {path} is not a reward model folder")
    uncertainty = uncertainties(records, models, cfg)
    keep = most_uncertain(uncertainty, cfg.count)
    write_jsonl(cfg.out, [{**records[i], "uncertainty": round(uncertainty[i], 6)} for i in keep])
    if cfg.rest:
        kept = set(keep)
        write_jsonl(cfg.rest, [rec for i, rec in enumerate(records) if i not in kept])
    chosen = [uncertainty[i] for i in keep]
    print(
        f"reward select: kept {len(keep)} of {len(records)} sets, uncertainty {min(chosen):.3f}-{max(chosen):.3f} "
        f"(pool mean {sum(uncertainty) / len(uncertainty):.3f}) -> {cfg.out}"
    )
    return Path(cfg.out)
