"""`pipeline.json`: the run record, a versioned schema the pipeline writes and the report reads.

The record says what ran, with which options, how long it took and a few headline numbers per stage. Reading
is strict: an unknown version, an unknown key or a value of the wrong type raises `RlhfkitError` naming the
file and the key, so a renamed field fails loudly instead of silently dropping a section of the report.
Records written before the schema was versioned (no `version` key) hold the same keys and read as version 1.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError

RECORD_VERSION = 1
RECORD_FILE = "pipeline.json"
STATUSES = ("running", "done", "failed")


@dataclass
class StageRecord:
    status: str  # running, done or failed
    key: str  # hash of the stage's command line and its inputs' keys: an unchanged stage is skipped
    command: list[str]  # the equivalent `rlhfkit` command line, to rerun the stage by hand
    options: dict[str, Any]  # the stage's options (its defaults.toml table, quick overlay, user table)
    seconds: float | None = None  # wall time of the finished stage
    finished_at: str | None = None  # UTC, ISO 8601
    metrics: dict[str, float] = field(default_factory=dict)  # a few headline numbers of what it wrote


@dataclass
class RunRecord:
    run_dir: str = ""
    quick: bool = False
    cai: bool = False
    methods: list[str] = field(default_factory=lambda: ["ppo"])
    config: dict[str, Any] = field(default_factory=dict)  # the user's pipeline config (TOML tables, seed)
    stages: dict[str, StageRecord] = field(default_factory=dict)  # in the order they first ran
    total_seconds: float | None = None  # the finished stages' seconds, summed
    version: int = RECORD_VERSION

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord | None:
        """The record in `run_dir`, or None when there is none yet."""
        path = Path(run_dir) / RECORD_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RlhfkitError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: object, where: str | Path) -> RunRecord:
        if not isinstance(data, dict):
            raise RlhfkitError(f"{where}: expected a JSON object")
        version = data.get("version", RECORD_VERSION)
        if version != RECORD_VERSION:
            raise RlhfkitError(
                f"{where}: run record version {version!r}; this rlhfkit reads {RECORD_VERSION}"
            )
        values = _checked(cls, data, str(where))
        stages = values.get("stages", {})
        if not isinstance(stages, dict):
            raise RlhfkitError(f"{where}: stages: expected an object keyed by stage name")
        values["stages"] = {
            name: StageRecord(**_checked(StageRecord, rec, f"{where}: stages.{name}"))
            for name, rec in stages.items()
        }
        for name, rec in values["stages"].items():
            if rec.status not in STATUSES:
                raise RlhfkitError(f"{where}: stages.{name}.status: expected one of {', '.join(STATUSES)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, run_dir: str | Path) -> None:
        """Write atomically: a reader never sees half a record."""
        path = Path(run_dir) / RECORD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        tmp.replace(path)


_TYPES = {"str": str, "bool": bool, "int": int, "float": (int, float), "dict": dict, "list": list}


def _checked(cls, data: object, where: str) -> dict:
    """`data`'s keys checked against `cls`'s fields (names and plain types); unknown keys are an error."""
    if not isinstance(data, dict):
        raise RlhfkitError(f"{where}: expected a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RlhfkitError(f"{where}: unknown key(s) {', '.join(unknown)} in a {cls.__name__}")
    missing = [
        n
        for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RlhfkitError(f"{where}: missing key(s) {', '.join(missing)}")
    for name, value in data.items():
        kind = str(fields[name].type).split("[")[0].split(" |")[0]
        optional = "None" in str(fields[name].type)
        expected = _TYPES.get(kind)
        if value is None and optional:
            continue
        if expected and (not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool))):
            raise RlhfkitError(f"{where}: {name}: expected {fields[name].type}, got {type(value).__name__}")
    return dict(data)
