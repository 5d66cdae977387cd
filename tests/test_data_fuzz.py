"""A bounded fuzz of the record readers: seeded byte flips and truncations of small valid .jsonl.gz, Parquet
and `datasets` folder files (its Arrow data and its JSON metadata), each converted by `rlhfkit data convert`.

Whatever the damage, the command either still finds valid records (a flip in a gzip header's name, a Parquet
statistic) or exits 1 with one `rlhfkit: error:` line naming the source, no traceback, and no --out written.
A crash (a traceback, or SIGSEGV from a memory-mapped Arrow file, which this found) fails the run. The GGUF
header fuzz is next to the other GGUF tests, in test_real_models_inference.py."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.data.jsonl import write_jsonl

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

CASES_PER_KIND = 10
HH = [
    {"chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello!", "rejected": f"\n\nHuman: Hi {i}\n\nAssistant: No."}
    for i in range(20)
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A truncation (a download cut short) or 1-8 random bytes overwritten (a damaged disk or a hostile file)."""
    if rng.random() < 0.4:
        return data[: rng.randrange(len(data))]
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    return bytes(damaged)


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("valid")
    files = {"gz": root / "hh.jsonl.gz", "parquet": root / "hh.parquet", "folder": root / "hh-ds"}
    write_jsonl(files["gz"], HH)
    pq.write_table(pa.Table.from_pylist(HH), files["parquet"])
    datasets.Dataset.from_list(HH).save_to_disk(str(files["folder"]))
    return files


def damaged_copy(valid: dict[str, Path], kind: str, case: Path, rng: random.Random) -> Path:
    if kind in ("gz", "parquet"):
        src = case / valid[kind].name
        src.write_bytes(mutate(valid[kind].read_bytes(), rng))
        return src
    src = case / "ds"
    shutil.copytree(valid["folder"], src)
    names = ["data-00000-of-00001.arrow"] * 3 + ["state.json", "dataset_info.json"]  # mostly the data
    target = src / rng.choice(names)
    target.write_bytes(mutate(target.read_bytes(), rng))
    return src


@pytest.mark.parametrize("kind", ["gz", "parquet", "folder"])
def test_damaged_sources_are_one_line_errors_and_write_nothing(valid, tmp_path, capsys, kind):
    rng = random.Random(f"fuzz-{kind}")
    errors = 0
    for n in range(CASES_PER_KIND):
        case = tmp_path / f"case{n}"
        case.mkdir()
        src = damaged_copy(valid, kind, case, rng)
        out = case / "out" / "pairs.jsonl"
        capsys.readouterr()
        code = main(["data", "convert", "--from", "hh", "--in", str(src), "--out", str(out)])
        err = capsys.readouterr().err
        if code == 0:
            assert out.is_file(), f"case {n}: exit 0 without --out"
            continue
        errors += 1
        assert code == 1, f"case {n}: exit {code}: {err}"
        assert err.startswith(f"rlhfkit: error: {src}") and err.count("\n") == 1, f"case {n}: {err}"
        assert not out.parent.exists() or not any(out.parent.iterdir()), f"case {n}: wrote {out}"
    assert errors >= CASES_PER_KIND // 2  # the mutations do damage: most cases are errors
