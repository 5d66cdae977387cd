"""Measure CAI against the demo world's gold judge: do revisions improve answers, does the AI labeler agree?

Works on what `revise` and `label` write, as long as their records carry the world's task `meta` (prompts
from `world build` do; `generate` and both CAI commands pass it through).

- `revision_gains(chains)`: gold score of the initial response and of the final revision, in total and per
  judge part (honesty, safety, intent, ...), averaged over the chains where that part applies.
- `labeler_agreement(comparisons)`: the share of AI-labelled pairs whose `chosen` the gold judge also scores
  higher (pairs the gold judge scores equal are left out), next to the same number for the simulated human
  annotators (`world/annotators.py`) on the very same pairs, so the AI labeler is compared with the humans
  it replaces.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path


def _world_meta(record: dict) -> dict | None:
    meta = record.get("meta") or {}
    return meta if isinstance(meta, dict) and meta.get("task") else None


def revision_gains(chains: Sequence[dict]) -> dict:
    """Mean gold total and parts before and after revision (chains without world meta are skipped)."""
    from rlhfkit.world.judge import score

    before_total, after_total, parts, n, improved, worse = 0.0, 0.0, {}, 0, 0, 0
    for chain in chains:
        meta = _world_meta(chain)
        if meta is None:
            continue
        meta = {k: v for k, v in meta.items() if k != "generation"}
        a, b = score(chain["prompt"], chain["initial"], meta), score(chain["prompt"], chain["final"], meta)
        n += 1
        before_total += a.total
        after_total += b.total
        improved += b.total > a.total + 1e-9
        worse += b.total < a.total - 1e-9
        for name in a.parts:
            s = parts.setdefault(name, [0, 0.0, 0.0])
            s[0] += 1
            s[1] += a.parts[name]
            s[2] += b.parts[name]
    if not n:
        return {"chains": 0}
    return {
        "chains": n,
        "gold_before": round(before_total / n, 4),
        "gold_after": round(after_total / n, 4),
        "improved": improved,
        "worse": worse,
        "parts": {
            k: {"n": c, "before": round(x / c, 4), "after": round(y / c, 4)}
            for k, (c, x, y) in sorted(parts.items())
        },
    }


def _content(messages: list[dict]) -> str:
    return "".join(m["content"] for m in messages)


def labeler_agreement(comparisons: Sequence[dict], simulated_seed: int = 0) -> dict:
    """Agreement of the AI labels with the gold judge, and of simulated humans on the same pairs."""
    from rlhfkit.world.annotators import label_candidates
    from rlhfkit.world.judge import score

    agree, decided, soft, gold_ties = 0, 0, 0.0, 0
    order = random.Random(f"cai-world-eval:{simulated_seed}")
    pairs = []
    for rec in comparisons:
        meta = _world_meta(rec)
        if meta is None:
            continue
        meta = {k: v for k, v in meta.items() if k not in ("generation", "cai")}
        g_chosen = score(rec["prompt"], _content(rec["chosen"]), meta).total
        g_rejected = score(rec["prompt"], _content(rec["rejected"]), meta).total
        if abs(g_chosen - g_rejected) < 1e-9:
            gold_ties += 1
            continue
        decided += 1
        gold_prefers_chosen = g_chosen > g_rejected
        agree += gold_prefers_chosen
        label = float(rec.get("label", 1.0))
        soft += label if gold_prefers_chosen else 1.0 - label  # probability the labeler gave the gold winner
        completions, winner = [rec["chosen"], rec["rejected"]], 0 if gold_prefers_chosen else 1
        if (
            order.random() < 0.5
        ):  # humans favour the first option shown: show the AI's pick first half the time
            completions, winner = completions[::-1], 1 - winner
        pairs.append(
            {
                "id": str(rec.get("id", len(pairs))),
                "prompt": rec["prompt"],
                "category": rec.get("category", ""),
                "meta": meta,
                "completions": completions,
                "gold_winner": winner,
            }
        )
    if not decided:
        return {"pairs": 0, "gold_ties": gold_ties}
    humans = label_candidates(
        [{k: v for k, v in p.items() if k != "gold_winner"} for p in pairs], seed=simulated_seed
    )
    human_agree = sum(
        1 for p, h in zip(pairs, humans) if not h.get("ties") and h["ranking"][0] == p["gold_winner"]
    )
    return {
        "pairs": decided,
        "gold_ties": gold_ties,
        "ai_agreement": round(agree / decided, 4),
        "ai_mean_prob_of_gold_winner": round(soft / decided, 4),
        "simulated_human_agreement": round(human_agree / decided, 4),
    }


def world_eval(
    chains: str | Path | None = None,
    comparisons: str | Path | None = None,
    rlhf_comparisons: str | Path | None = None,
) -> dict:
    """`rlhfkit cai world-eval` (and the pipeline after `cai_evaluate`): revision gains of the chains, gold
    agreement of the AI labels and how many of those labels came from a person, next to the human rankings
    (and their pairs) the RLHF branch needed."""
    from rlhfkit.data.jsonl import read_jsonl

    result: dict = {}
    if chains:
        result["revisions"] = revision_gains([rec for _, rec in read_jsonl(chains)])
    if comparisons:
        labels = [rec for _, rec in read_jsonl(comparisons)]
        result["labels"] = labeler_agreement(labels)
        result["human_comparisons"] = sum(not str(r.get("annotator", "")).startswith("ai:") for r in labels)
    if rlhf_comparisons:
        rankings = [rec for _, rec in read_jsonl(rlhf_comparisons)]
        result["rlhf_human_rankings"] = len(rankings)
        result["rlhf_human_pairs"] = sum(
            len(x["completions"]) * (len(x["completions"]) - 1) // 2 for x in rankings
        )
    return result


def write_world_eval(
    chains: str | Path | None,
    comparisons: str | Path | None,
    rlhf_comparisons: str | Path | None,
    out: str | Path,
) -> dict:
    """`world_eval` written as JSON to `out` (`rlhfkit cai world-eval --out`; the pipeline after `cai_evaluate`)."""
    import json

    result = world_eval(chains, comparisons, rlhf_comparisons)
    Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
