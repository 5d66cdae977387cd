"""Record sources: where chats, prompts, comparisons and candidates come from.

Wherever rlhfkit reads records it takes a SOURCE, one of:

    data.jsonl                       JSON lines (any file that is not one of the below is read as JSONL)
    data.jsonl.gz                    gzip-compressed JSON lines (the HH-RLHF downloads)
    data.parquet                     a Parquet file
    DIR  or  DIR:SPLIT               a folder written by `datasets`' `save_to_disk` (a `DatasetDict` folder
                                     needs its split unless it has only one)
    NAME[/DATA_DIR][#CONFIG][:SPLIT] a Hugging Face Hub dataset through `datasets.load_dataset`, split `train`
                                     unless named: `Anthropic/hh-rlhf/harmless-base:test` is the repository
                                     `Anthropic/hh-rlhf`, its folder `harmless-base`, split `test`;
                                     `hf:NAME...` always means the Hub, even when NAME (or its repository
                                     part) is also a folder here

Every source yields `(number, record)`: the line number for JSONL (blank lines skipped), the row number counted
from 1 for tables, so the same records give the same numbers in every format. Records then go through the
same checks and converters, and errors read `data.jsonl:12: field 'chosen': ...` for a file of lines and
`data.parquet: row 12: field 'chosen': ...` for a table (`RlhfkitError.at` asks the source which).

Tables have a column for every field, so a row holds `None` where its record had no such field (and a struct
holds `None` for a key only some records had): in a table, null means absent, and those keys are dropped so a
record reads back as it was written. Parquet, `datasets` folders and Hub datasets need the `[hf]` extra
(`datasets`, `pyarrow`); Hub names also need the Hub, or the dataset already in the local `datasets` cache
(when the Hub probe of `rlhfkit.hub` fails, the cache is all that is tried, so a missing dataset fails in
seconds). Inputs are hostile until parsed: a damaged table is one error line (Arrow data is validated before
its rows are read), a missing column is named with the columns present, and JSONL lines are capped
(`data.jsonl`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.errors import RlhfkitError, first_line
from rlhfkit.hub import hub_offline, hub_reachable  # the one probe, shared with model sources

BATCH_ROWS = 1024  # rows converted to Python at a time: bounded memory for large tables
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".jsonl.gz", ".txt", ".csv")
HF_EXTRA = "pip install 'rlhfkit[hf]'"


class RecordSource:
    """One parsed SOURCE. `str()` is the name errors begin with; iterating yields `(number, record)`."""

    def __init__(self, spec: str | Path) -> None:
        self.spec = str(spec)
        self.split: str | None = None
        self.config: str | None = None
        self.data_dir: str | None = None
        self.repo: str | None = None
        self._loaded = None  # the `datasets` Dataset of a folder or Hub source, loaded once
        self.kind, self.name = self._parse(self.spec)
        self.numbers_rows = self.kind != "jsonl"  # read by RlhfkitError.at: "row N" instead of ":N"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"RecordSource({self.spec!r}, kind={self.kind!r})"

    def _parse(self, spec: str) -> tuple[str, str]:
        if spec.startswith("hf:"):
            return self._hub(spec[len("hf:") :])
        p = Path(spec)
        if p.is_file():
            return ("parquet" if p.suffix == ".parquet" else "jsonl"), str(p)
        if p.is_dir():
            return "folder", str(p)
        folder, sep, split = spec.rpartition(":")
        if sep and folder and split and Path(folder).is_dir():
            self.split = split
            return "folder", spec
        looks_local = spec.startswith((".", "/", "~")) or p.name.endswith(FILE_SUFFIXES)
        if looks_local:
            return "jsonl", str(p)  # read_jsonl names the missing file
        return self._hub(spec)

    def _hub(self, spec: str) -> tuple[str, str]:
        body, sep, split = spec.rpartition(":")
        if not sep:
            body, split = spec, ""
        body, _, config = body.partition("#")
        parts = body.split("/")
        repo = self.repo = "/".join(parts[:2])
        if not HUB_REPO.match(repo) or any(not part for part in parts):
            raise RlhfkitError(
                f"{spec}: not a file or folder here, nor a Hub dataset name (NAME[/DATA_DIR][#CONFIG][:SPLIT])"
            )
        self.data_dir = "/".join(parts[2:]) or None
        self.config = config or None
        self.split = split or "train"
        return "hub", spec

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        if self.kind == "jsonl":
            return read_jsonl(self.name)
        return _numbered(self._batches())

    def columns(self) -> list[str] | None:
        """A table's column names; None for JSONL, where each record has its own keys."""
        if self.kind == "jsonl":
            return None
        if self.kind == "parquet":
            with self._unreadable("Parquet file"):
                return list(self._parquet_file().schema_arrow.names)
        return list(self._dataset().column_names)

    def require_columns(self, names: tuple[str, ...]) -> None:
        """For a table, one error naming every missing column and the columns it has, before any row is read
        (row by row, a missing column would read as a field missing from every record)."""
        present = self.columns()
        missing = [n for n in names if present is not None and n not in present]
        if missing:
            raise RlhfkitError(
                f"{self}: no column {', '.join(repr(n) for n in missing)} "
                f"(columns: {', '.join(present) if present else 'none'})"
            )

    def _batches(self) -> Iterator:
        if self.kind == "parquet":
            return self._parquet_batches()
        return self._dataset_batches()

    def _dataset(self):
        if self._loaded is None:
            loaded = self._load_folder() if self.kind == "folder" else self._load_hub()
            with self._unreadable("`datasets` folder" if self.kind == "folder" else "Hub dataset"):
                # `datasets` memory-maps its Arrow files unchecked, and a damaged offset there crashed the
                # process (SIGSEGV) when rows were read; a full validation turns that into an error first.
                loaded.data.table.validate(full=True)
            self._loaded = loaded
        return self._loaded

    def _parquet_file(self):
        return _import_hf(self, "pyarrow.parquet", "Parquet files").ParquetFile(self.name)

    @contextlib.contextmanager
    def _unreadable(self, what: str) -> Iterator[None]:
        """A damaged table (truncated, bytes flipped) as one line: pyarrow and `datasets` raise OSError,
        ValueError (ArrowInvalid, JSON and UTF-8 errors) or another ArrowException, wherever they notice."""
        try:
            yield
        except (OSError, ValueError, _arrow_exception()) as exc:
            raise RlhfkitError(f"{self}: not a readable {what} ({first_line(exc)})") from None

    def _parquet_batches(self) -> Iterator:
        with self._unreadable("Parquet file"):
            for batch in self._parquet_file().iter_batches(batch_size=BATCH_ROWS):
                yield batch.to_pylist()  # inside: a damaged string column fails here (UTF-8)

    def _dataset_batches(self) -> Iterator:
        with self._unreadable("`datasets` folder" if self.kind == "folder" else "Hub dataset"):
            for batch in self._dataset().with_format("arrow").iter(batch_size=BATCH_ROWS):
                yield batch.to_pylist()

    def _load_folder(self):
        folder = self.spec if self.split is None else self.spec[: -len(self.split) - 1]
        if not any((Path(folder) / marker).is_file() for marker in ("state.json", "dataset_dict.json")):
            raise RlhfkitError(
                f"{folder}: is a directory, expected a JSONL file, a Parquet file or a folder written by "
                f"`datasets`' save_to_disk"
            )
        datasets = _import_hf(self, "datasets", "`datasets` folders")
        with self._unreadable("`datasets` folder"):
            loaded = datasets.load_from_disk(folder)
        return _pick_split(loaded, self.split, self)

    def _load_hub(self):
        datasets = _import_hf(self, "datasets", "Hub datasets")
        try:
            with _offline_unless_reachable():
                # `hf://datasets/` is datasets' Hub-only form: a bare name that is also a folder under the
                # working directory would be read from that folder, and `hf:NAME` must mean the Hub.
                return datasets.load_dataset(
                    f"hf://datasets/{self.repo}", self.config, data_dir=self.data_dir, split=self.split
                )
        except (
            Exception
        ) as exc:  # datasets raises many kinds (ConnectionError, DatasetNotFoundError, ValueError)
            raise hub_dataset_error(self, self.repo, exc) from None

    def fingerprint(self) -> str:
        """A short hash of the data: a file's bytes, else its records (what a stage records it trained on)."""
        h = hashlib.sha256()
        if self.kind in ("jsonl", "parquet"):
            h.update(Path(self.name).read_bytes())
        else:
            for _, record in self:
                h.update(json.dumps(record, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


def record_source(source: str | Path | RecordSource) -> RecordSource:
    return source if isinstance(source, RecordSource) else RecordSource(source)


def read_records(source: str | Path | RecordSource) -> Iterator[tuple[int, dict]]:
    """`(number, record)` for every record of a SOURCE (see the module docstring); errors name the source."""
    return iter(record_source(source))


def _numbered(batches: Iterator[list[dict]]) -> Iterator[tuple[int, dict]]:
    n = 0
    for rows in batches:
        for row in rows:
            n += 1
            yield n, _drop_nulls(row)


def _drop_nulls(value):
    """A table row as the record it came from: null struct fields dropped, dates as ISO-8601 text."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _pick_split(loaded, split: str | None, source: RecordSource):
    if not hasattr(loaded, "keys"):  # a single Dataset
        if split is not None:
            raise RlhfkitError(f"{source}: the folder holds one split, not a DatasetDict; drop ':{split}'")
        return loaded
    names = list(loaded.keys())
    if split is None and len(names) == 1:
        return loaded[names[0]]
    if split not in names:
        raise RlhfkitError(
            f"{source}: expected a split of this DatasetDict as DIR:SPLIT (splits: {', '.join(names)})"
        )
    return loaded[split]


def _arrow_exception() -> type[BaseException]:
    try:
        from pyarrow import ArrowException
    except ImportError:  # without the [hf] extra, _import_hf says what to install
        return OSError
    return ArrowException


def _import_hf(source: RecordSource, module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RlhfkitError(
            f"{source}: reading {what} needs the optional packages datasets and pyarrow: {HF_EXTRA}"
        ) from None


@contextlib.contextmanager
def _offline_unless_reachable() -> Iterator[None]:
    """Load in offline mode (from the `datasets` cache only) when the Hub probe fails, as models do.

    Why: both libraries read HF_HUB_OFFLINE once, at import, and otherwise retry an unreachable Hub for ~30 s
    before failing; their module-level flags are what they consult, so they are set for this one load."""
    if hub_offline() or hub_reachable():
        yield
        return
    import huggingface_hub.constants as hub_constants
    from datasets import config as ds_config

    saved = hub_constants.HF_HUB_OFFLINE, ds_config.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = ds_config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE, ds_config.HF_HUB_OFFLINE = saved


def hub_dataset_error(source: RecordSource, repo: str, exc: Exception) -> RlhfkitError:
    """One line for a Hub dataset that could not be loaded: offline and not cached, unknown, or a bad split."""
    from datasets import config as ds_config

    text = first_line(exc)
    if hub_offline() or not hub_reachable() or isinstance(exc, ConnectionError) or "offline" in text.lower():
        return RlhfkitError(
            f"{source}: not a local file or folder, and the Hugging Face Hub cannot be reached (offline); the "
            f"dataset '{repo}' is not in the datasets cache ({ds_config.HF_DATASETS_CACHE}) either. Load it "
            f"where the Hub is reachable and copy the cache, or save it with save_to_disk / to_parquet and "
            f"pass that folder or file"
        )
    return RlhfkitError(f"{source}: could not load the Hub dataset '{repo}' ({text})")
