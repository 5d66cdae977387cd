"""One project error type: the CLI prints its message on one line and exits non-zero, no traceback."""

from __future__ import annotations


class RlhfkitError(Exception):
    """A problem the user can fix (bad input, missing file, wrong option).

    Build messages that name the file, the line and the field when there is one,
    and say what was expected: ``RlhfkitError.at("data.jsonl", 12, "messages", "expected a list")``.
    """

    @classmethod
    def at(
        cls, path: object, line: int | None = None, field: str | None = None, problem: str = ""
    ) -> RlhfkitError:
        where = str(path)
        if line is not None:  # a table (Parquet, `datasets`) numbers rows, a text file lines
            where += f": row {line}" if getattr(path, "numbers_rows", False) else f":{line}"
        if field:
            where += f": field '{field}'"
        return cls(f"{where}: {problem}" if problem else where)


def first_line(exc: BaseException) -> str:
    """A library exception's first line (its type name if it has no message): what a one-line error quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
