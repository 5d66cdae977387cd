"""Constitutions: load and validate the TOML file of principles that SL-CAI and RL-CAI read.

A constitution is the whole value system of a CAI run, so it is a small, human-readable file (TOML, read with
the standard library's `tomllib`) that is checked strictly: unknown keys are errors (a typo such as
`critque_request` must not silently drop a principle's text), and every error names the file, the line of the
offending principle or key, and the field (`principles[2].revision_request`). The documented default ships
with the package (`default_constitution.toml`); see docs/cai.md for the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rlhfkit.errors import RlhfkitError

DEFAULT_NAME = "default_constitution.toml"
TEXT_FIELDS = ("critique_request", "revision_request", "comparison_question")
PRINCIPLE_KEYS = ("name", *TEXT_FIELDS, "aspects")
TOP_KEYS = ("name", "description", "principles")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Principle:
    """One principle: what to ask for a critique, for a revision, and the labeler's multiple-choice question."""

    name: str
    critique_request: str
    revision_request: str
    comparison_question: str
    aspects: tuple[str, ...] = ()  # what it is about; only the demo world's demonstrations read this


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    source: str  # the file it was read from ("<default>" for the packaged one)
    description: str = ""

    def find(self, name: str) -> Principle:
        for p in self.principles:
            if p.name == name:
                return p
        raise RlhfkitError(f"{self.source}: no principle named '{name}'")


def default_constitution_text() -> str:
    return resources.files("rlhfkit.cai").joinpath(DEFAULT_NAME).read_text(encoding="utf-8")


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Read and validate a constitution file; `None` loads the packaged default."""
    if path is None:
        return parse_constitution(default_constitution_text(), "<default>")
    p = Path(path)
    if not p.is_file():
        raise RlhfkitError(f"{p}: constitution file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RlhfkitError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_constitution(text, str(p))


def parse_constitution(text: str, source: str) -> Constitution:
    """Validate the TOML text of a constitution; errors name `source`, the line and the field."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        problem = message[: match.start()].strip() if match else message
        raise RlhfkitError.at(source, line, None, f"not valid TOML ({problem})") from None
    where = _Locator(text, source)
    for key in data:
        if key not in TOP_KEYS:
            raise where.error(None, key, f"unknown key (expected one of: {', '.join(TOP_KEYS)})")
    name = data.get("name", Path(source).stem if source != "<default>" else "default")
    if not isinstance(name, str) or not name.strip():
        raise where.error(None, "name", "expected a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise where.error(None, "description", "expected a string")
    raw = data.get("principles")
    if raw is None:
        raise RlhfkitError.at(
            source, None, "principles", "missing; expected at least one [[principles]] table"
        )
    if not isinstance(raw, list) or not raw or not all(isinstance(p, dict) for p in raw):
        raise where.error(None, "principles", "expected a non-empty array of [[principles]] tables")
    principles = [_principle(p, i, where) for i, p in enumerate(raw)]
    seen: dict[str, int] = {}
    for i, p in enumerate(principles):
        if p.name in seen:
            raise where.error(
                i, "name", f"duplicate principle name '{p.name}' (also principles[{seen[p.name]}])"
            )
        seen[p.name] = i
    return Constitution(name.strip(), tuple(principles), source, description.strip())


def _principle(raw: dict, index: int, where: _Locator) -> Principle:
    for key in raw:
        if key not in PRINCIPLE_KEYS:
            raise where.error(index, key, f"unknown key (expected one of: {', '.join(PRINCIPLE_KEYS)})")
    for key in ("name", *TEXT_FIELDS):
        if key not in raw:
            raise where.error(index, key, "missing; expected a non-empty string", locate_key=False)
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise where.error(index, key, f"expected a non-empty string, got {raw[key]!r}")
    if not NAME_RE.match(raw["name"]):
        raise where.error(
            index, "name", f"expected letters, digits, '-' or '_' (no spaces), got {raw['name']!r}"
        )
    aspects = raw.get("aspects", [])
    if not isinstance(aspects, list) or not all(isinstance(a, str) and a.strip() for a in aspects):
        raise where.error(index, "aspects", f"expected a list of non-empty strings, got {aspects!r}")
    return Principle(
        name=raw["name"],
        critique_request=raw["critique_request"].strip(),
        revision_request=raw["revision_request"].strip(),
        comparison_question=raw["comparison_question"].strip(),
        aspects=tuple(a.strip() for a in aspects),
    )


class _Locator:
    """Find the line of a top-level key or of a key inside the n-th `[[principles]]` table, for error messages.

    `tomllib` reports no positions for values, so this scans the text; when the file uses another spelling
    (an inline array of tables), the line is simply left out of the message.
    """

    HEADER = re.compile(r"^\s*\[\[\s*principles\s*\]\]")
    ANY_HEADER = re.compile(r"^\s*\[")

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source
        self.headers = [i for i, line in enumerate(self.lines) if self.HEADER.match(line)]

    def _span(self, index: int | None) -> tuple[int, int] | None:
        if index is None:
            end = next(
                (i for i, line in enumerate(self.lines) if self.ANY_HEADER.match(line)), len(self.lines)
            )
            return 0, end
        if index >= len(self.headers):
            return None
        start = self.headers[index]
        end = next(
            (i for i in range(start + 1, len(self.lines)) if self.ANY_HEADER.match(self.lines[i])),
            len(self.lines),
        )
        return start, end

    def line(self, index: int | None, key: str | None, locate_key: bool = True) -> int | None:
        span = self._span(index)
        if span is None:
            return None
        start, end = span
        if key and locate_key:
            key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
            for i in range(start, end):
                if key_re.match(self.lines[i]):
                    return i + 1
        return start + 1 if index is not None else None

    def error(self, index: int | None, key: str, problem: str, locate_key: bool = True) -> RlhfkitError:
        field = key if index is None else f"principles[{index}].{key}"
        return RlhfkitError.at(self.source, self.line(index, key, locate_key), field, problem)
