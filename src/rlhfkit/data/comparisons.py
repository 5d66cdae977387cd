"""Comparison data: pairwise preferences and K-way rankings, validated and turned into comparison groups.

Two record shapes share one file format (see GUIDE.md):

- a pair (TRL preference format): `{"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}` with optional
  `tie` (bool), `margin` (float: how much better chosen should score) and `label` (float in [0, 1]: a soft
  probability that chosen is better, e.g. from an AI labeler);
- a ranking: `{"prompt": [msgs], "completions": [[msgs], ...K], "ranking": [best, ..., worst], "ties": [[i, j]]}`.

Both load into a `ComparisonGroup`: one prompt, its completions, and the judged pairs between them, each with
a target probability that `better` beats `worse` (1 for a preference, 0.5 for a tie, the soft label
otherwise). A ranking of K completions expands into its C(K, 2) pairs but stays one group, because the
reward model trains on a group as one batch element (each completion scored once, the loss averaged over
its pairs; InstructGPT found that shuffling the pairs as independent examples overfits).

Every malformed record raises an error naming file, line and field; no valid record is ever dropped.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from pathlib import Path

from rlhfkit.data.chats import check_messages, check_optional_str
from rlhfkit.data.sources import RecordSource, record_source
from rlhfkit.errors import RlhfkitError

PROMPT_ROLES = ("system", "user", "assistant")
COMPLETION_ROLES = ("assistant",)


@dataclass
class JudgedPair:
    """One judgement between two completions of a group (indices into `ComparisonGroup.completions`)."""

    better: int
    worse: int
    target: float = 1.0  # probability that `better` is preferred: 1 hard, 0.5 tie, in between soft
    margin: float = 0.0  # the score difference a hard preference should exceed

    @property
    def is_tie(self) -> bool:
        return self.target == 0.5


@dataclass
class ComparisonGroup:
    """A prompt, its completions and the judged pairs among them; `record` is the validated source line."""

    prompt: list[dict]
    completions: list[list[dict]]
    pairs: list[JudgedPair]
    record: dict = field(default_factory=dict)
    line: int | None = None

    @property
    def category(self) -> str:
        return self.record.get("category", "")

    @property
    def annotator(self) -> str:
        return self.record.get("annotator", "")


def ranking_pairs(ranking: list[int], ties: list[list[int]] | None = None) -> list[JudgedPair]:
    """All C(K, 2) pairs implied by a best-to-worst ranking; pairs listed in `ties` get target 0.5."""
    tied = {frozenset(t) for t in ties or []}
    return [
        JudgedPair(better, worse, 0.5 if frozenset((better, worse)) in tied else 1.0)
        for better, worse in combinations(ranking, 2)
    ]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_common(record: dict, path: str | Path, line: int | None) -> None:
    for key in ("annotator", "id", "category"):
        check_optional_str(record, key, path, line)
    if "seconds" in record and not (_is_number(record["seconds"]) and record["seconds"] >= 0):
        raise RlhfkitError.at(path, line, "seconds", f"expected a number >= 0, got {record['seconds']!r}")
    if "created_at" in record:
        value = record["created_at"]
        try:
            datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise RlhfkitError.at(
                path, line, "created_at", f"expected an ISO-8601 date-time, got {value!r}"
            ) from None
    flags = record.get("flags", [])
    if not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
        raise RlhfkitError.at(path, line, "flags", "expected a list of strings")
    if "meta" in record and not isinstance(record["meta"], dict):
        raise RlhfkitError.at(path, line, "meta", f"expected an object, got {type(record['meta']).__name__}")


def _check_pair(record: dict, path: str | Path, line: int | None) -> ComparisonGroup:
    for key in ("completions", "ranking", "ties"):
        if key in record:
            raise RlhfkitError.at(
                path, line, key, "not allowed in a pair record (it has 'chosen'/'rejected')"
            )
    chosen = check_messages(record.get("chosen"), path, line, "chosen", COMPLETION_ROLES)
    rejected = check_messages(record.get("rejected"), path, line, "rejected", COMPLETION_ROLES)
    tie = record.get("tie", False)
    if not isinstance(tie, bool):
        raise RlhfkitError.at(path, line, "tie", f"expected true or false, got {tie!r}")
    margin = record.get("margin", 0.0)
    if not _is_number(margin):
        raise RlhfkitError.at(path, line, "margin", f"expected a finite number, got {margin!r}")
    target = 0.5 if tie else 1.0
    if "label" in record:
        label = record["label"]
        if not (_is_number(label) and 0.0 <= label <= 1.0):
            raise RlhfkitError.at(path, line, "label", f"expected a probability in [0, 1], got {label!r}")
        if tie and label != 0.5:
            raise RlhfkitError.at(path, line, "label", f"a tie has label 0.5, got {label!r}")
        target = float(label)
    if tie and margin:
        raise RlhfkitError.at(path, line, "margin", "a tie cannot have a margin")
    return ComparisonGroup(
        record["prompt"], [chosen, rejected], [JudgedPair(0, 1, target, float(margin))], record, line
    )


def _check_ranking(record: dict, path: str | Path, line: int | None) -> ComparisonGroup:
    for key in ("chosen", "rejected", "tie", "margin", "label"):
        if key in record:
            raise RlhfkitError.at(path, line, key, "not allowed in a ranking record (it has 'completions')")
    completions = record["completions"]
    if not isinstance(completions, list) or len(completions) < 2:
        raise RlhfkitError.at(path, line, "completions", "expected a list of at least 2 completions")
    for i, completion in enumerate(completions):
        check_messages(completion, path, line, f"completions[{i}]", COMPLETION_ROLES)
    k = len(completions)
    ranking = record.get("ranking")
    if not isinstance(ranking, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ranking
    ):
        raise RlhfkitError.at(path, line, "ranking", "expected a list of completion indices, best first")
    if sorted(ranking) != list(range(k)):
        missing = sorted(set(range(k)) - set(ranking))
        extra = sorted({i for i in ranking if not 0 <= i < k} | {i for i in ranking if ranking.count(i) > 1})
        raise RlhfkitError.at(
            path,
            line,
            "ranking",
            f"expected each index 0..{k - 1} exactly once (missing {missing}, out of range or repeated {extra})",
        )
    ties = record.get("ties", [])
    if not isinstance(ties, list):
        raise RlhfkitError.at(path, line, "ties", "expected a list of [i, j] index pairs")
    for n, tie in enumerate(ties):
        ok = isinstance(tie, list) and len(tie) == 2 and all(isinstance(i, int) and 0 <= i < k for i in tie)
        if not ok or tie[0] == tie[1]:
            raise RlhfkitError.at(
                path, line, f"ties[{n}]", f"expected two different indices in 0..{k - 1}, got {tie!r}"
            )
    return ComparisonGroup(record["prompt"], completions, ranking_pairs(ranking, ties), record, line)


def check_comparison(record: dict, path: str | Path, line: int | None) -> ComparisonGroup:
    """Validate one comparison record (pair or ranking) and return its group."""
    check_messages(record.get("prompt"), path, line, "prompt", PROMPT_ROLES)
    _check_common(record, path, line)
    if "chosen" in record or "rejected" in record:
        return _check_pair(record, path, line)
    if "completions" in record:
        return _check_ranking(record, path, line)
    raise RlhfkitError.at(
        path,
        line,
        None,
        "expected a pair ('chosen' and 'rejected') or a ranking ('completions' and 'ranking')",
    )


def load_comparisons(path: str | Path | RecordSource) -> list[ComparisonGroup]:
    """Read and validate comparison records (pairs and rankings may be mixed) from a source (`data.sources`)."""
    src = record_source(path)
    groups = [check_comparison(rec, src, lineno) for lineno, rec in src]
    if not groups:
        raise RlhfkitError(f"{src}: no comparison records (empty file)")
    return groups


def prompt_item(record: dict) -> str:
    """The prompt item a comparison line came from: the candidates record it was labelled from.

    A ranking line's id is `<candidates id>:<annotator>`; an AI label's pair line records its candidates id in
    `meta.cai.candidates_id`; anything else falls back to its prompt's messages. Items whose prompt text repeats
    (the demo world samples some questions more than once) are separate items."""
    cai = (record.get("meta") or {}).get("cai") or {}
    if cai.get("candidates_id"):
        return str(cai["candidates_id"])
    if isinstance(record.get("id"), str) and ":" in record["id"]:
        return record["id"].rsplit(":", 1)[0]
    return json.dumps(record.get("prompt"), sort_keys=True)


def split_by_prompt_item(lines: list[str], eval_share: float = 0.1, seed: int = 0) -> set[int]:
    """Indices of the held-out lines: `eval_share` of the prompt items (at least one), with all their lines,
    so no held-out prompt is trained on (CAI labels have one pair line per pair of candidates). With one line
    per item, as the RLHF rankings have, this is the same split as one by line."""
    groups: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        groups.setdefault(prompt_item(json.loads(line)), []).append(i)
    items = list(groups.values())
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return {i for g in order[: max(1, int(len(items) * eval_share))] for i in items[g]}


def write_split(path: str | Path, out_dir: str | Path) -> tuple[int, int]:
    """Split a comparisons file into `out_dir/train.jsonl` and `out_dir/eval.jsonl` (lines kept byte for byte);
    return the line counts."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    held = split_by_prompt_item(lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = "".join(ln + "\n" for i, ln in enumerate(lines) if i not in held)
    (out / "train.jsonl").write_text(train, encoding="utf-8")
    (out / "eval.jsonl").write_text(
        "".join(ln + "\n" for i, ln in enumerate(lines) if i in held), encoding="utf-8"
    )
    return len(lines) - len(held), len(held)
