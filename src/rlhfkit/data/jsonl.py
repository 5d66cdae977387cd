"""JSONL files: one JSON object per line, UTF-8, read with line numbers so errors can point at them.

A name ending in `.gz` is gzip-compressed JSONL (the HH-RLHF files ship so), decompressed as it is read; line
numbers and byte offsets are those of the decompressed text. Other record sources (Parquet, `datasets`
folders, Hub datasets) are read by `data.sources.read_records`, which hands JSONL to `read_jsonl`.

Reading streams: one line at a time, and no line longer than `max_line_bytes()` (16 MiB unless raised with
`--max-line-bytes` or RLHFKIT_MAX_LINE_BYTES) is ever held whole, so a small gzip that expands to one huge
line fails at the cap instead of filling memory. Writing is atomic: records go to a temporary file in the
same folder, renamed over the target only when the last one is written, so a failure (a bad record half-way
through a converted source, a crash) leaves any earlier file as it was and no partial one.

Blank lines are skipped (editors leave them at the end); anything else that is not a JSON object is an
error naming the file and line, never a silently dropped record. The one exception, `read_jsonl_lenient`, reads
what a running stage has written so far (metrics, samples) for reports.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from rlhfkit.errors import RlhfkitError

DEFAULT_MAX_LINE_BYTES = 16 * 2**20  # far above any real record (HH-RLHF's longest is ~60 KB), far below RAM
MAX_LINE_ENV = "RLHFKIT_MAX_LINE_BYTES"  # the same cap for commands without the flag (sft, reward, ppo...)
_SIZE_UNITS = {"": 1, "K": 2**10, "KIB": 2**10, "M": 2**20, "MIB": 2**20, "G": 2**30, "GIB": 2**30}
_max_line_bytes: int | None = None  # set by --max-line-bytes for the command being run


def parse_size(text: str) -> int:
    """`"64MiB"`, `"64M"`, `"1G"` or `"1048576"` -> a positive number of bytes (binary units)."""
    raw = str(text).strip().upper().replace(" ", "")
    digits = raw.rstrip("KMGIB")
    unit = raw[len(digits) :]
    if not digits.isdigit() or unit not in _SIZE_UNITS or int(digits) <= 0:
        raise ValueError(f"expected a positive size such as 64MiB or 1048576, got {text!r}")
    return int(digits) * _SIZE_UNITS[unit]


def max_line_bytes() -> int:
    """The longest line a reader accepts: --max-line-bytes, else RLHFKIT_MAX_LINE_BYTES, else 16 MiB."""
    if _max_line_bytes is not None:
        return _max_line_bytes
    env = os.environ.get(MAX_LINE_ENV, "").strip()
    if not env:
        return DEFAULT_MAX_LINE_BYTES
    try:
        return parse_size(env)
    except ValueError as exc:
        raise RlhfkitError(f"{MAX_LINE_ENV}: {exc}") from None


@contextlib.contextmanager
def line_cap(limit: int | None) -> Iterator[None]:
    """Within the block, readers accept lines up to `limit` bytes (None: RLHFKIT_MAX_LINE_BYTES or 16 MiB).
    What a command given --max-line-bytes runs in; the previous cap is restored after it."""
    global _max_line_bytes
    saved, _max_line_bytes = _max_line_bytes, limit
    try:
        yield
    finally:
        _max_line_bytes = saved


def add_max_line_bytes_arg(parser: argparse.ArgumentParser) -> None:
    """`--max-line-bytes SIZE` on a command that reads records; its handler runs in `line_cap(args.max_line_bytes)`."""

    def size(text: str) -> int:
        try:
            return parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--max-line-bytes",
        type=size,
        default=None,
        metavar="SIZE",
        help=f"longest JSONL line to accept (default 16MiB, or ${MAX_LINE_ENV}); a longer line is an error "
        "before it is read whole",
    )


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, record)` for each non-blank line of a JSONL file (line numbers start at 1).

    Checks that the file exists when called, not when first iterated, so a missing file is reported at once."""
    p = Path(path)
    if p.is_dir():
        raise RlhfkitError(f"{p}: is a directory, expected a JSONL file")
    if not p.is_file():
        raise RlhfkitError(f"{p}: file not found")
    return _read_file(p)


def _read_file(p: Path) -> Iterator[tuple[int, dict]]:
    compressed = p.name.endswith(".gz")
    with gzip.open(p, "rb") if compressed else p.open("rb") as fh:
        yield from read_jsonl_stream(fh, p, compressed=compressed)


def read_jsonl_text(text: str, name: str | Path) -> Iterator[tuple[int, dict]]:
    """`read_jsonl` for text already in memory (an uploaded file), with the same checks and messages."""
    return read_jsonl_stream(io.BytesIO(text.encode("utf-8")), name)


def read_jsonl_stream(fh: BinaryIO, name: str | Path, compressed: bool = False) -> Iterator[tuple[int, dict]]:
    """`(line_number, record)` from a binary stream of JSONL; errors begin with `name`.

    Lines are read as bytes and decoded one by one, so text that is not UTF-8 is reported with its line, column
    and byte offset in the file (a whole-file decode only knows an offset into its buffer)."""
    where = "in the decompressed file" if compressed else "in the file"
    limit = max_line_bytes()
    offset = 0  # bytes before the current line
    lineno = 0
    while True:
        lineno += 1
        try:
            raw = fh.readline(limit + 1)  # bounded: a longer line is never held whole
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            if not compressed:
                raise
            raise RlhfkitError(f"{name}: not a readable gzip file ({exc or type(exc).__name__})") from None
        if not raw:
            return
        if len(raw) > limit and not raw.endswith(b"\n"):  # limit bytes of text, then its newline, pass
            raise RlhfkitError.at(
                name,
                lineno,
                None,
                f"line longer than {limit:,} bytes (the --max-line-bytes cap; raise it with --max-line-bytes "
                f"or {MAX_LINE_ENV} if the record is meant to be this long)",
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
            raise RlhfkitError.at(
                name,
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
                name, lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        except RecursionError:
            raise RlhfkitError.at(name, lineno, None, "not valid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise RlhfkitError.at(name, lineno, None, f"expected a JSON object, got {type(record).__name__}")
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


def jsonl_line(record: dict) -> str:
    """One record as a JSONL line: compact JSON, non-ASCII kept as is, then a newline."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line (UTF-8, non-ASCII kept as is; gzip-compressed when the name ends in `.gz`),
    atomically: streamed into a temporary file in the same folder, renamed over `path` once the last record is
    written. Create parent folders; return the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # A plain open (not mkstemp, whose files are 0600) so the result has the permissions of any new file.
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    try:
        with open(tmp, "xb") as raw:
            # GzipFile writes its trailer on close and leaves `raw` open; the header names the target, not tmp.
            gz = gzip.GzipFile(filename=p.name, mode="wb", fileobj=raw) if p.name.endswith(".gz") else None
            with io.TextIOWrapper(raw if gz is None else gz, encoding="utf-8", newline="\n") as fh:
                for record in records:
                    fh.write(jsonl_line(record))
                    count += 1
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
