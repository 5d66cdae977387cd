"""JSONL files: one JSON object per line, UTF-8, read with line numbers so errors can point at them.

A name ending in `.gz` is gzip-compressed JSONL (the HH-RLHF files ship so), decompressed as it is read; line
numbers and byte offsets are those of the decompressed text. Other record sources (Parquet, `datasets`
folders, Hub datasets) are read by `data.sources.read_records`, which hands JSONL to `read_jsonl`.

Blank lines are skipped (editors leave them at the end); anything else that is not a JSON object is an
error naming the file and line, never a silently dropped record. The one exception, `read_jsonl_lenient`, reads
what a running stage has written so far (metrics, samples) for reports.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from rlhfkit.errors import RlhfkitError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, record)` for each non-blank line of a JSONL file (line numbers start at 1).

    The file is read as bytes and decoded line by line, so text that is not UTF-8 is reported with its
    line, column and byte offset in the file (a whole-file decode only knows an offset into its buffer)."""
    p = Path(path)
    if p.is_dir():
        raise RlhfkitError(f"{p}: is a directory, expected a JSONL file")
    if not p.is_file():
        raise RlhfkitError(f"{p}: file not found")
    compressed = p.name.endswith(".gz")
    where = "in the decompressed file" if compressed else "in the file"
    offset = 0  # bytes before the current line
    with gzip.open(p, "rb") if compressed else p.open("rb") as fh:
        lines = enumerate(fh, 1)
        while True:
            try:
                lineno, raw = next(lines)
            except StopIteration:
                break
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                if not compressed:
                    raise
                raise RlhfkitError(f"{p}: not a readable gzip file ({exc or type(exc).__name__})") from None
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
                raise RlhfkitError.at(
                    p,
                    lineno,
                    None,
                    f"not UTF-8 text ({exc.reason}: byte 0x{raw[exc.start]:02x} at column {column}, "
                    f"byte offset {offset + exc.start} {where})",
                ) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RlhfkitError.at(
                    p, lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            except RecursionError:
                raise RlhfkitError.at(p, lineno, None, "not valid JSON (nested too deeply)") from None
            if not isinstance(record, dict):
                raise RlhfkitError.at(p, lineno, None, f"expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def read_jsonl_lenient(path: str | Path, limit: int | None = None) -> list[dict]:
    """The JSON objects of a JSONL file that may still be being written (a report on a running stage): lines
    that do not parse are skipped and a missing file is empty. For input data use `read_jsonl`, which fails."""
    out: list[dict] = []
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if limit is not None and len(out) >= limit:
                    break
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(value, dict):
                    out.append(value)
    except OSError:
        return []
    return out


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line (UTF-8, non-ASCII kept as is; gzip-compressed when the name ends in `.gz`);
    create parent folders; return the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "wt", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
