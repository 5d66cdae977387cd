"""RL-CAI: an AI labeler turns candidate pairs into soft-labelled comparisons, one principle at a time.

For every pair of candidate responses (x, y) to a prompt, `principles_per_pair` distinct principles are drawn
(seeded by (seed, candidates id, pair)). For each principle the labeler is asked its multiple-choice question
twice, once with x as (A) and once with x as (B):

    q1 = P_labeler("(A)" | x shown as A, y as B)          (normalized over the two options)
    q2 = P_labeler("(B)" | y shown as A, x as B)
    P(x better) = mean over principles of (q1 + q2) / 2

Both orders cancel position bias: a labeler that always answers "(A)" gives q1 = 1, q2 = 0, hence 0.5.
`ask_both_orders` is the one place that asks a labeler to compare two responses this way: CAI labels, the
revision check (`revise`) and `rlhfkit evaluate --judge openai:...` all go through it.
The pair is written in the shared comparison format with `chosen` = the response with P >= 0.5 and `label` =
P(chosen better) (a soft probability the reward model's cross-entropy uses as its target), the principles and
the per-principle numbers in `meta.cai`, and `annotator` = "ai:<labeler>". Pairs of identical responses carry no
preference and are skipped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

from rlhfkit.cai.constitution import Constitution, Principle, load_constitution
from rlhfkit.cai.prompts import comparison_prompt
from rlhfkit.config import require_at_least
from rlhfkit.errors import RlhfkitError


@dataclass
class LabelConfig:
    """`rlhfkit cai label`. Defaults: two principles per pair, every pair of a prompt's candidates."""

    labeler: str = ""  # checkpoint folder or openai:URL#MODEL
    candidates: str = ""  # candidates (`rlhfkit generate --n K`): JSONL or another record source
    out: str = "runs/cai/comparisons.jsonl"  # pairwise comparisons JSONL with `label` = P(chosen is better)
    constitution: str | None = None  # TOML file; None = the packaged default
    principles_per_pair: int = 2  # distinct principles whose soft labels are averaged (capped at the total)
    max_pairs_per_prompt: int = 0  # 0 = all C(K, 2) pairs; else a seeded sample of that many
    batch_size: int = 16  # local labeler: rows scored together
    api: str = "chat"  # endpoint labeler: "chat" or "completions"
    votes: int = 8  # endpoint labeler without log-probs: sampled replies per question
    seed: int = 0  # random seed (principle draws, pair samples, endpoint votes)
    categories: list[str] | None = None  # label only records of these categories (e.g. the red-team prompts)
    device: str = "auto"  # local labeler: auto (the GPU when CUDA is available, else the CPU), cpu, cuda[:N]
    dtype: str = (
        "auto"  # local labeler: auto (bf16 on a bf16-capable GPU, else float32), float32, bfloat16, float16
    )
    chat_template: str | None = None  # local labeler: a Jinja chat template FILE replacing the model's own


def sample_principles(principles: Sequence[Principle], k: int, seed: int, key: str) -> list[Principle]:
    """`k` distinct principles (all of them when k >= their number), drawn by a generator seeded by `key`."""
    rng = random.Random(f"cai-label:{seed}:{key}")
    return rng.sample(list(principles), min(k, len(principles)))


def _text(completion: object) -> str:
    return "".join(m["content"] for m in completion) if isinstance(completion, list) else str(completion)


def check_candidates(records: Sequence[tuple[int, dict]], path: str | Path) -> None:
    from rlhfkit.data.chats import check_messages

    for lineno, rec in records:
        check_messages(rec.get("prompt"), path, lineno, "prompt")
        comps = rec.get("completions")
        if not isinstance(comps, list) or len(comps) < 2:
            raise RlhfkitError.at(path, lineno, "completions", "expected a list of at least 2 completions")
        for i, c in enumerate(comps):
            check_messages(c, path, lineno, f"completions[{i}]", ("assistant",))
        if rec.get("meta") is not None and not isinstance(rec["meta"], dict):
            raise RlhfkitError.at(path, lineno, "meta", "expected an object")


@dataclass
class _Pair:
    record: dict
    key: str
    i: int
    j: int
    principles: list[Principle]


def plan_pairs(
    records: Sequence[dict], constitution: Constitution, cfg: LabelConfig
) -> tuple[list[_Pair], int]:
    """The pairs to label with their principles, and how many identical pairs were skipped."""
    pairs, identical = [], 0
    for n, rec in enumerate(records):
        rid = str(rec.get("id", f"candidates-{n}"))
        texts = [_text(c) for c in rec["completions"]]
        chosen = list(combinations(range(len(texts)), 2))
        if cfg.max_pairs_per_prompt and len(chosen) > cfg.max_pairs_per_prompt:
            rng = random.Random(f"cai-pairs:{cfg.seed}:{rid}")
            chosen = sorted(rng.sample(chosen, cfg.max_pairs_per_prompt))
        for i, j in chosen:
            if texts[i].strip() == texts[j].strip():
                identical += 1
                continue
            key = f"{rid}:{i}:{j}"
            principles = sample_principles(constitution.principles, cfg.principles_per_pair, cfg.seed, key)
            pairs.append(_Pair(rec, key, i, j, principles))
    return pairs, identical


def soft_label(first_order: Sequence[float], second_order: Sequence[float]) -> float:
    """P(x better): mean over principles of P("(A)") when x is A and P("(B)") = 1 - P("(A)") when x is B."""
    values = [a for a in first_order] + [1.0 - b for b in second_order]
    return sum(values) / len(values)


# (prompt messages, question, response shown as (A), response shown as (B)) -> the request text
Render = Callable[[Sequence[dict], str, str, str], str]


class PairQuestion(NamedTuple):
    """Compare response `x` with `y` (texts) after `prompt`, under each of `questions`."""

    prompt: Sequence[dict]
    x: str
    y: str
    questions: Sequence[str]


@dataclass
class BothOrders:
    """The labeler's answers for one `PairQuestion`: per question, P("(A)") with x shown as (A) (`first`) and
    with y shown as (A) (`second`), and every `Choice` in request order (question by question, x first)."""

    first: list[float]
    second: list[float]
    choices: list

    @property
    def p_x(self) -> float:
        """P(x better than y), position bias cancelled (`soft_label`)."""
        return soft_label(self.first, self.second)


def both_orders_texts(item: PairQuestion, render: Render = comparison_prompt) -> list[str]:
    """Per question: the request with x as (A), then with x as (B)."""
    out = []
    for question in item.questions:
        out.append(render(item.prompt, question, item.x, item.y))
        out.append(render(item.prompt, question, item.y, item.x))
    return out


def ask_both_orders(
    labeler, items: Sequence[PairQuestion], render: Render = comparison_prompt
) -> list[BothOrders]:
    """Ask `labeler` every question of every item in both orders, in one `labeler.judge` call (so a local
    labeler batches them); return each item's answers."""
    choices = labeler.judge([text for item in items for text in both_orders_texts(item, render)])
    out, pos = [], 0
    for item in items:
        mine = choices[pos : pos + 2 * len(item.questions)]
        pos += len(mine)
        out.append(BothOrders([c.prob_a for c in mine[0::2]], [c.prob_a for c in mine[1::2]], list(mine)))
    return out


def pair_question(pair: _Pair) -> PairQuestion:
    """The pair's candidates i (x) and j (y) under each of its principles."""
    x, y = _text(pair.record["completions"][pair.i]), _text(pair.record["completions"][pair.j])
    return PairQuestion(pair.record["prompt"], x, y, [p.comparison_question for p in pair.principles])


def label_pairs(
    records: Sequence[dict],
    labeler,
    constitution: Constitution,
    cfg: LabelConfig,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict]:
    """Label every planned pair of every candidates record; return (comparison records, stats)."""
    require_at_least(cfg, 1, "principles_per_pair")
    pairs, identical = plan_pairs(records, constitution, cfg)
    chunk = 8  # pairs per labeler call: progress updates without hurting batching much
    out: list[dict] = []
    methods: dict[str, int] = {}
    truncated = 0
    for start in range(0, len(pairs), chunk):
        group = pairs[start : start + chunk]
        began = time.perf_counter()
        answers = ask_both_orders(labeler, [pair_question(pair) for pair in group])
        seconds = (time.perf_counter() - began) / max(1, len(group))
        for pair, answer in zip(group, answers):
            for c in answer.choices:
                methods[c.method] = methods.get(c.method, 0) + 1
                truncated += int(c.truncated)
            out.append(_record(pair, answer, labeler.name, seconds, constitution.name))
        if on_progress:
            on_progress(min(start + chunk, len(pairs)), len(pairs))
    stats = {
        "pairs": len(out),
        "identical_skipped": identical,
        "questions": sum(methods.values()),
        "methods": methods,
        "truncated": truncated,
    }
    return out, stats


def _record(pair: _Pair, answer: BothOrders, labeler_name: str, seconds: float, constitution: str) -> dict:
    rec = pair.record
    first, second, choices = answer.first, answer.second, answer.choices
    p_i = answer.p_x
    better, worse = (pair.i, pair.j) if p_i >= 0.5 else (pair.j, pair.i)
    label = p_i if better == pair.i else 1.0 - p_i
    masses = [c.option_mass for c in choices if c.option_mass is not None]
    meta = dict(rec.get("meta") or {})
    meta["cai"] = {
        "stage": "rl-cai",
        "constitution": constitution,
        "labeler": labeler_name,
        "principles": [p.name for p in pair.principles],
        # per principle: P(candidate `pair[0]` better) shown first as (A), then shown second as (B)
        "per_principle": [
            {"principle": p.name, "as_a": round(a, 6), "as_b": round(1.0 - b, 6)}
            for p, a, b in zip(pair.principles, first, second)
        ],
        "pair": [pair.i, pair.j],
        "candidates_id": str(rec.get("id", "")),
        "method": sorted({c.method for c in choices}),
        "option_mass": round(sum(masses) / len(masses), 6) if masses else None,
    }
    return {
        "id": f"{rec.get('id', 'candidates')}-{pair.i}-{pair.j}",
        "prompt": rec["prompt"],
        "chosen": rec["completions"][better],
        "rejected": rec["completions"][worse],
        "label": round(label, 6),
        "annotator": f"ai:{labeler_name}",
        "seconds": round(seconds, 4),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "category": rec.get("category", ""),
        "meta": meta,
    }


def run(cfg: LabelConfig) -> Path:
    """`rlhfkit cai label` (the pipeline's `cai_labels` and `hybrid_labels` stages): `run_label`, summarized;
    return `cfg.out`."""
    result = run_label(cfg)
    labels = [c["label"] for c in result["comparisons"]]
    methods = ", ".join(f"{k} {v}" for k, v in sorted(result["methods"].items()))
    print(
        f"cai label: {result['pairs']} pairs ({result['identical_skipped']} identical skipped), "
        f"{result['questions']} questions ({methods}), mean label {sum(labels) / len(labels):.3f}"
        + (f", {result['truncated']} truncated" if result["truncated"] else "")
        + f" -> {cfg.out}"
    )
    return Path(cfg.out)


def run_label(cfg: LabelConfig, labeler=None) -> dict:
    """Read candidates, label them with the labeler (built from `cfg.labeler` unless given), write comparisons."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rlhfkit.cai.labelers import load_labeler
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.data.sources import record_source

    if cfg.api not in ("chat", "completions"):
        raise RlhfkitError(f"--api: expected chat or completions, got '{cfg.api}'")
    constitution = load_constitution(cfg.constitution)
    source = record_source(cfg.candidates)
    lines = list(source)
    if not lines:
        raise RlhfkitError(f"{source}: no candidates records (empty file)")
    check_candidates(lines, source)
    records = [rec for _, rec in lines]
    if cfg.categories:
        records = [rec for rec in records if rec.get("category") in cfg.categories]
        if not records:
            raise RlhfkitError(f"{cfg.candidates}: no record of the categories {', '.join(cfg.categories)}")
    if labeler is None:
        if not cfg.labeler:
            raise RlhfkitError("--labeler: expected a model folder or openai:URL#MODEL")
        labeler = load_labeler(
            cfg.labeler,
            batch_size=cfg.batch_size,
            api=cfg.api,
            votes=cfg.votes,
            seed=cfg.seed,
            device=cfg.device,
            dtype=cfg.dtype,
            chat_template=cfg.chat_template,
        )
    with Progress(
        TextColumn("cai label"), BarColumn(), MofNCompleteColumn(), TextColumn("pairs"), TimeRemainingColumn()
    ) as progress:
        task = progress.add_task("label", total=None)
        comparisons, stats = label_pairs(
            records,
            labeler,
            constitution,
            cfg,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if not comparisons:
        raise RlhfkitError(f"{cfg.candidates}: no pair of different responses to label")
    write_jsonl(cfg.out, comparisons)
    return {**stats, "comparisons": comparisons}
