"""Simulated annotators: noisy, biased, tiring people who rank responses using the gold judge.

Each annotator sees K responses (K >= 2) and perceives response i as

    u_i = gold_i + length_bias * log2(words_i + 1) + position_bias * [i shown first] + noise * fatigue(t) * G_i

with G_i standard Gumbel noise, then ranks by u. For two responses that is exactly a Bradley-Terry choice:
P(i beats j) = sigmoid((mu_i - mu_j) / (noise * fatigue(t))). ``fatigue(t) = 1 + fatigue * t / 100`` grows with
the number of items t the annotator has already labeled in the session. Two responses whose perceived values
differ by less than ``tie_band * (1 + leniency)`` are called a tie (lenient annotators call more ties).
Simulated seconds grow with the words to read, with K, with how close the call is, and with fatigue.

The default pool (``PoolConfig``) is calibrated so two different annotators agree on about 73% of realistic
pairs (InstructGPT's labelers agreed on 72.6%); ``measure_agreement`` reports the number and
``tests/test_world_annotators.py`` keeps it within 70-76%.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from rlhfkit.world.judge import score
from rlhfkit.world.tasks import Task

SESSION_START = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)  # simulated clock: deterministic timestamps


@dataclass(frozen=True)
class Annotator:
    """One simulated person. Biases are in gold-score points (the judge's 0..10 scale)."""

    name: str
    noise: float  # Gumbel scale of perception noise at the start of a session
    length_bias: float  # preference per doubling of length (positive: likes longer answers)
    position_bias: float  # bonus for the option shown first
    leniency: float  # widens the tie band
    fatigue: float  # relative noise growth per 100 labeled items
    words_per_second: float  # reading speed


@dataclass(frozen=True)
class PoolConfig:
    """Population the annotators are drawn from; defaults are the calibrated demo pool."""

    size: int = 10
    noise: float = 0.6  # mean perception noise (calibrated: ~73% inter-annotator agreement, seeds 0-4)
    noise_spread: float = 0.25  # relative spread of noise between annotators
    length_bias: float = 0.25  # mean length bias (people slightly prefer longer answers)
    position_bias: float = 0.15  # mean bonus for the first option
    fatigue: float = 0.05  # noise +5% per 100 items
    tie_band: float = 0.05  # perceived difference below which a pair is a tie (before leniency)
    seed: int = 0


def make_pool(config: PoolConfig | None = None) -> list[Annotator]:
    """Draw ``config.size`` annotators with personal biases around the pool's means."""
    c = config or PoolConfig()
    rng = random.Random(f"pool:{c.seed}")
    pool = []
    for i in range(c.size):
        pool.append(
            Annotator(
                name=f"sim-{i:02d}",
                noise=c.noise * max(0.3, rng.gauss(1.0, c.noise_spread)),
                length_bias=rng.gauss(c.length_bias, c.length_bias * 0.8),
                position_bias=abs(rng.gauss(c.position_bias, c.position_bias * 0.5)),
                leniency=rng.uniform(0.0, 1.5),
                fatigue=c.fatigue * rng.uniform(0.5, 1.5),
                words_per_second=rng.uniform(3.0, 6.0),
            )
        )
    return pool


@dataclass
class Judgment:
    ranking: list[int]
    ties: list[list[int]]
    seconds: float


def judge_as(
    a: Annotator,
    gold: list[float],
    words: list[int],
    items_done: int,
    rng: random.Random,
    tie_band: float = PoolConfig.tie_band,
    prompt_words: int = 0,
) -> Judgment:
    """How annotator ``a`` ranks responses with these gold scores, after ``items_done`` items this session."""
    scale = a.noise * (1 + a.fatigue * items_done / 100)
    perceived = []
    for i, (g, n) in enumerate(zip(gold, words)):
        mu = g + a.length_bias * math.log2(n + 1) + (a.position_bias if i == 0 else 0.0)
        gumbel = -math.log(-math.log(rng.random() or 1e-12) or 1e-12)
        perceived.append(mu + scale * gumbel)
    ranking = sorted(range(len(gold)), key=lambda i: -perceived[i])
    band = tie_band * (1 + a.leniency)
    ties = [
        [i, j]
        for i in range(len(gold))
        for j in range(i + 1, len(gold))
        if abs(perceived[i] - perceived[j]) < band
    ]
    closeness = math.exp(-abs(perceived[ranking[0]] - perceived[ranking[-1]]) / max(scale, 1e-6))
    read = (prompt_words + sum(words)) / a.words_per_second
    decide = (3.0 + 6.0 * closeness) * (len(gold) - 1) * (1 + a.fatigue * items_done / 100)
    seconds = round((read + decide) * math.exp(rng.gauss(0.0, 0.25)), 1)
    return Judgment(ranking, ties, seconds)


def _text(completion: list[dict] | str) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def label_candidates(
    records: list[dict],
    *,
    pool_size: int = 10,
    overlap: int = 1,
    seed: int = 0,
    config: PoolConfig | None = None,
    include_gold: bool = False,
    session: str = "",
) -> list[dict]:
    """Rank each candidates record's completions by ``overlap`` distinct simulated annotators.

    Returns K-way ranking comparisons (shared format): prompt, completions, ranking (best first), ties,
    annotator, seconds, created_at, id, category, meta. With ``include_gold`` the gold scores are added to
    ``meta["gold"]`` (for analysis only; never train on them). ``session`` names another labeling session of
    the same pool (``seed`` draws the people; a new session gives them fresh noise).
    """
    base = config or PoolConfig()
    pool = make_pool(replace(base, size=pool_size, seed=seed))
    if not 1 <= overlap <= len(pool):
        raise ValueError(f"overlap must be between 1 and the pool size ({len(pool)}), got {overlap}")
    rng = random.Random(f"label:{seed}{session}")
    done = {a.name: 0 for a in pool}
    clock = {a.name: 0.0 for a in pool}
    out = []
    for rec in records:
        texts = [_text(c) for c in rec["completions"]]
        gold = [score(rec["prompt"], t, rec.get("meta")).total for t in texts]
        words = [len(t.split()) for t in texts]
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in rec["prompt"])
        # the least busy annotators take the item (ties broken at random), as a labeling queue would
        chosen = sorted(pool, key=lambda a: (done[a.name], rng.random()))[:overlap]
        for a in chosen:
            j = judge_as(a, gold, words, done[a.name], rng, base.tie_band, prompt_words)
            done[a.name] += 1
            clock[a.name] += j.seconds + 2.0
            meta = dict(rec.get("meta") or {})
            if include_gold:
                meta["gold"] = gold
            created = SESSION_START + timedelta(seconds=clock[a.name])
            out.append(
                {
                    "id": f"{rec.get('id', len(out))}:{a.name}",
                    "prompt": rec["prompt"],
                    "completions": rec["completions"],
                    "ranking": j.ranking,
                    "ties": j.ties,
                    "annotator": a.name,
                    "seconds": j.seconds,
                    "created_at": created.isoformat().replace("+00:00", "Z"),
                    "category": rec.get("category", ""),
                    "meta": meta,
                }
            )
    return out


def calibration_pairs(n: int, seed: int = 0) -> list[dict]:
    """Realistic candidate pairs: a policy's samples are sometimes both good, sometimes one is flawed."""
    from rlhfkit.world.chats import CATEGORY_WEIGHTS
    from rlhfkit.world.prompts import sample_prompt

    rng = random.Random(f"calibration:{seed}")
    cats = list(CATEGORY_WEIGHTS)
    pairs = []
    for i in range(n):
        category = rng.choices(cats, [CATEGORY_WEIGHTS[c] for c in cats])[0]
        messages, task, meta = sample_prompt(category, rng)

        mix = rng.random()
        kinds = ("good", "flawed") if mix < 0.6 else ("good", "good") if mix < 0.8 else ("flawed", "flawed")
        a, b = (_calibration_response(task, meta, category, k, rng) for k in kinds)
        if rng.random() < 0.5:
            a, b = b, a
        pairs.append(
            {
                "id": f"cal-{i:05d}",
                "prompt": messages,
                "category": category,
                "meta": meta,
                "completions": [[{"role": "assistant", "content": a}], [{"role": "assistant", "content": b}]],
            }
        )
    return pairs


def _calibration_response(task: Task, meta: dict, category: str, quality: str, rng: random.Random) -> str:
    from rlhfkit.world.answers import FLAWS, GENERIC_FLAWS, core_answer, flawed_response, good_response
    from rlhfkit.world.style import styled

    good = good_response(task, rng)
    if category == "persona":
        adherence = "full" if quality == "good" else rng.choice(("none", "partial", "wrong"))
        return styled(good, core_answer(task), meta["persona"], task.kind, rng, adherence)
    if quality == "good":
        return good
    flaws = FLAWS[category] + ("too_long",) + (GENERIC_FLAWS if rng.random() < 0.15 else ())
    return flawed_response(task, rng.choice(flaws), rng)


def _label(j: dict) -> int:
    """0 or 1 for the preferred response of a pair, 2 for a tie."""
    return 2 if j["ties"] else j["ranking"][0]


def measure_agreement(
    n_pairs: int = 2000, *, pool_size: int = 10, seed: int = 0, config: PoolConfig | None = None
) -> float:
    """Fraction of realistic pairs on which two different annotators give the same label (tie counts as one)."""
    pairs = calibration_pairs(n_pairs, seed)
    labels = label_candidates(pairs, pool_size=pool_size, overlap=2, seed=seed, config=config)
    agree = sum(_label(labels[i]) == _label(labels[i + 1]) for i in range(0, len(labels), 2))
    return agree / (len(labels) // 2)


def agreement_ceiling(records: list[dict], pool_size: int = 10, seed: int = 12345) -> dict:
    """The ceiling a reward model is judged against: how often two different simulated annotators agree on the
    same pairs of *these* candidates. The records are labelled a second time with overlap 2 (those labels are
    only measured, never trained on)."""
    import json

    from rlhfkit.annotate.agreement import pair_preferences, pairwise_agreement

    labels = label_candidates(records, pool_size=pool_size, overlap=2, seed=seed)
    units: dict[tuple, list[int]] = {}
    for rec in labels:
        key = json.dumps(rec["prompt"]) + json.dumps(rec["completions"])
        for pair, value in pair_preferences(rec["ranking"], rec.get("ties") or []).items():
            units.setdefault((key, *pair), []).append(value)
    return {
        "pairwise_agreement": pairwise_agreement([u for u in units.values() if len(u) >= 2]),
        "items": len(records),
        "pairs": sum(len(u) >= 2 for u in units.values()),
    }
