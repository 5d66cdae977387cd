"""JSONL files: one JSON object per line, UTF-8, read with line numbers so errors can point at them.

Blank lines are skipped (editors leave them at the end); anything else that is not a JSON object is an
error naming the file and line, never a silently dropped record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from rlhfkit.errors import RlhfkitError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, record)` for each non-blank line of a JSONL file (line numbers start at 1)."""
    p = Path(path)
    if not p.is_file():
        raise RlhfkitError(f"{p}: file not found")
    try:
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RlhfkitError.at(
                        p, lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(record, dict):
                    raise RlhfkitError.at(
                        p, lineno, None, f"expected a JSON object, got {type(record).__name__}"
                    )
                yield lineno, record
    except UnicodeDecodeError as exc:
        raise RlhfkitError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line (UTF-8, non-ASCII kept as is); create parent folders; return the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with p.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
