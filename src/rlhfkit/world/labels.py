"""`rlhfkit label`: the demo world's simulated annotators rank candidates (the pipeline's `labels` stage).

Writes K-way ranking comparisons to `out` and, when `agreement_out` is given, how often two annotators agree on
the same pairs (`annotators.agreement_ceiling`: the ceiling a reward model is judged against). The pipeline
then splits the comparisons by prompt item (`data.comparisons.write_split`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError


@dataclass
class LabelsConfig:
    """`rlhfkit label`. Defaults: ten annotators, each item ranked once."""

    candidates: str = ""  # candidates JSONL (prompt, completions, category, meta)
    out: str = "runs/demo/labels/all.jsonl"  # output JSONL of K-way ranking comparisons
    pool_size: int = 10  # number of simulated annotators
    overlap: int = 1  # annotators per item
    seed: int = 0  # random seed
    agreement_out: str | None = None  # also label the first 500 items again with overlap 2 (measured only,
    # not written to --out) and write how often two annotators agree on the same pairs (the ceiling for a
    # reward model) to this JSON


def response_text(value: object, path: str, lineno: int, field: str = "response") -> str:
    """A response given as a string, a message or a list of assistant messages, as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in value
    ):
        return "".join(m["content"] for m in value)
    raise RlhfkitError.at(path, lineno, field, "expected a string or a list of assistant messages")


def chat_messages(value: object, path: str, lineno: int, field: str) -> list[dict]:
    """`value` checked as a non-empty list of {role, content} messages."""
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    )
    if not ok:
        raise RlhfkitError.at(path, lineno, field, "expected a non-empty list of {role, content} messages")
    return value


def read_candidates(path: str) -> list[dict]:
    """Candidates records, each checked (file, line and field named on error) and given an `id`."""
    from rlhfkit.data.jsonl import read_jsonl

    records = []
    for lineno, rec in read_jsonl(path):
        chat_messages(rec.get("prompt"), path, lineno, "prompt")
        comps = rec.get("completions")
        if not isinstance(comps, list) or len(comps) < 2:
            raise RlhfkitError.at(path, lineno, "completions", "expected a list of at least 2 completions")
        for c in comps:
            response_text(c, path, lineno, "completions")
        if rec.get("meta") is not None and not isinstance(rec["meta"], dict):
            raise RlhfkitError.at(path, lineno, "meta", "expected an object")
        records.append({**rec, "id": str(rec.get("id", f"line{lineno}"))})
    return records


def run(cfg: LabelsConfig) -> Path:
    """Rank every candidates record with the simulated pool; return the comparisons file."""
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.world.annotators import agreement_ceiling, label_candidates

    if cfg.pool_size < 1:
        raise RlhfkitError("--pool-size must be at least 1")
    if not 1 <= cfg.overlap <= cfg.pool_size:
        raise RlhfkitError(f"--overlap must be between 1 and --pool-size ({cfg.pool_size})")
    records = read_candidates(cfg.candidates)
    labels = label_candidates(records, pool_size=cfg.pool_size, overlap=cfg.overlap, seed=cfg.seed)
    write_jsonl(cfg.out, labels)
    if cfg.agreement_out:
        ceiling = agreement_ceiling(records[:500], pool_size=cfg.pool_size)
        Path(cfg.agreement_out).write_text(json.dumps(ceiling, indent=2), encoding="utf-8")
        print(
            f"label: two annotators agree on {ceiling['pairwise_agreement']:.1%} of {ceiling['pairs']} pairs "
            f"-> {cfg.agreement_out}"
        )
    seconds = sum(r["seconds"] for r in labels)
    print(
        f"label: {len(labels)} rankings of {len(records)} items by {cfg.pool_size} simulated annotators "
        f"(overlap {cfg.overlap}, {seconds / 3600:.1f} simulated hours) -> {cfg.out}"
    )
    return Path(cfg.out)
