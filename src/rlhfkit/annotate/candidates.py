"""Read and validate a candidates file (and a gold file) before anything touches the database.

The whole file is parsed and checked first; only a file with no problem reaches ``create_campaign``, so a
bad line never leaves a half-made campaign behind. Every error names the file, the line and the field.

Candidates format (one JSON object a line, made by ``rlhfkit generate --n K``)::

    {"id": str, "prompt": [messages], "completions": [[{"role": "assistant", "content": str}], ...K],
     "category": str, "meta": {...}}

A gold file has the same records plus ``"ranking": [best, ..., worst]`` (completion indices) and optional
``"ties": [[i, j], ...]``: the known answer for a honeypot item.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.jsonl import read_jsonl, read_jsonl_text
from rlhfkit.errors import RlhfkitError

ROLES = ("system", "user", "assistant")
MAX_COMPLETIONS = 9  # keys 1..9 pick a response


@dataclass
class Candidate:
    """One prompt with its K responses (and, for gold items, the known ranking)."""

    id: str
    prompt: list[dict[str, str]]
    completions: list[list[dict[str, str]]]
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    gold: dict[str, Any] | None = None  # {"ranking": [...], "ties": [[i, j], ...]}


def _messages(
    value: Any, where: tuple[str, int], name: str, allow_empty: bool = False
) -> list[dict[str, str]]:
    path, line = where
    if not isinstance(value, list) or (not value and not allow_empty):
        raise RlhfkitError.at(path, line, name, "expected a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        here = f"{name}[{i}]"
        if not isinstance(message, dict):
            raise RlhfkitError.at(path, line, here, 'expected an object {"role": ..., "content": ...}')
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RlhfkitError.at(
                path, line, f"{here}.role", f"expected one of {', '.join(ROLES)}, got {role!r}"
            )
        if not isinstance(content, str):
            raise RlhfkitError.at(path, line, f"{here}.content", "expected a string")
        out.append({"role": role, "content": content})
    return out


def check_ranking(ranking: Any, ties: Any, k: int) -> tuple[list[int], list[list[int]]]:
    """Validate a ranking (a permutation of 0..k-1, best first) and its tie pairs; raise ValueError if bad.

    Tied completions must sit next to each other in the ranking (a tie group is one rank).
    """
    if (
        not isinstance(ranking, list)
        or sorted(ranking) != list(range(k))
        or any(type(x) is not int for x in ranking)
    ):
        raise ValueError(f"expected a permutation of 0..{k - 1} (best first)")
    ties = ties or []
    if not isinstance(ties, list):
        raise ValueError("ties: expected a list of [i, j] pairs")
    clean: set[tuple[int, int]] = set()
    for pair in ties:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or any(type(x) is not int or not 0 <= x < k for x in pair)
            or pair[0] == pair[1]
        ):
            raise ValueError(f"ties: expected pairs [i, j] of distinct indices in 0..{k - 1}, got {pair!r}")
        clean.add((min(pair), max(pair)))
    position = {c: p for p, c in enumerate(ranking)}
    groups = tie_groups(k, sorted(clean))
    for group in groups:
        spots = sorted(position[c] for c in group)
        if spots[-1] - spots[0] != len(spots) - 1:
            raise ValueError(f"ties: tied completions {sorted(group)} must be adjacent in the ranking")
    # Close the tie relation: every pair inside a group is a tie.
    full = sorted((a, b) for g in groups for a in g for b in g if a < b)
    return list(ranking), [list(p) for p in full]


def tie_groups(k: int, pairs: list[tuple[int, int]]) -> list[set[int]]:
    """Connected components of the tie relation (each completion alone if untied)."""
    parent = list(range(k))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, set[int]] = {}
    for c in range(k):
        groups.setdefault(root(c), set()).add(c)
    return list(groups.values())


def parse_record(record: Any, path: str, line: int, gold: bool = False) -> Candidate:
    where = (path, line)
    if not isinstance(record, dict):
        raise RlhfkitError.at(path, line, None, "expected a JSON object")
    rid = record.get("id", f"{Path(path).stem}-{line}")
    if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
        raise RlhfkitError.at(path, line, "id", "expected a non-empty string")
    prompt = _messages(record.get("prompt"), where, "prompt")
    if prompt[-1]["role"] == "assistant":
        raise RlhfkitError.at(
            path, line, "prompt", "expected the last message to be from the user, not the assistant"
        )
    completions = record.get("completions")
    if not isinstance(completions, list) or not 2 <= len(completions) <= MAX_COMPLETIONS:
        raise RlhfkitError.at(path, line, "completions", f"expected a list of 2..{MAX_COMPLETIONS} responses")
    parsed = [_messages(c, where, f"completions[{i}]") for i, c in enumerate(completions)]
    category = record.get("category", "")
    if not isinstance(category, str):
        raise RlhfkitError.at(path, line, "category", "expected a string")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise RlhfkitError.at(path, line, "meta", "expected an object")
    known = None
    if gold:
        try:
            ranking, ties = check_ranking(record.get("ranking"), record.get("ties"), len(parsed))
        except ValueError as exc:
            raise RlhfkitError.at(path, line, "ranking", str(exc)) from None
        known = {"ranking": ranking, "ties": ties}
    return Candidate(str(rid), prompt, parsed, category, meta, known)


def parse_lines(text: str, path: str, gold: bool = False) -> list[Candidate]:
    """Parse uploaded JSONL text; raise RlhfkitError naming the first bad line and field."""
    return _parse_all(read_jsonl_text(text, path), path, gold)


def read_candidates(path: str | Path, gold: bool = False) -> list[Candidate]:
    """Read a candidates (or gold) JSONL file (or .jsonl.gz), validating every line."""
    return _parse_all(read_jsonl(path), str(path), gold)


def _parse_all(records: Iterator[tuple[int, dict]], path: str, gold: bool) -> list[Candidate]:
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    for line_no, record in records:  # data.jsonl: JSON objects, errors name the file and line
        candidate = parse_record(record, path, line_no, gold=gold)
        if candidate.id in seen:
            raise RlhfkitError.at(
                path, line_no, "id", f"duplicate id {candidate.id!r} (first on line {seen[candidate.id]})"
            )
        seen[candidate.id] = line_no
        out.append(candidate)
    if not out:
        raise RlhfkitError.at(
            path, None, None, "no records found (expected JSONL, one candidates record a line)"
        )
    return out
