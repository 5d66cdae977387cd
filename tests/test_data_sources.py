"""Record sources (`data.sources`): the same records as .jsonl, .jsonl.gz, .parquet and a `datasets` folder load
identically through every loader; bad rows name the source, row and field; Hub names offline fail clearly."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from cli_measured import run_cli_measured
from rlhfkit.cli import main
from rlhfkit.data.chats import load_chats, load_prompts
from rlhfkit.data.comparisons import load_comparisons
from rlhfkit.data.convert import convert_records
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.data.sources import RecordSource, read_records
from rlhfkit.errors import RlhfkitError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

U = [{"role": "user", "content": "Is the sky blue?"}]


def A(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# Fields present in some records only, and meta objects with different keys: a table fills the gaps with
# nulls, which must read back as absent.
CHATS = [
    {"messages": U + A("Yes."), "id": "c1", "category": "facts", "meta": {"task": "color"}},
    {"messages": [{"role": "system", "content": "Be brief."}, *U, *A("Blue.")], "id": "c2"},
    {"messages": U + A("It is."), "meta": {"source": "x", "n": 3}},
]
COMPARISONS = [
    {"prompt": U, "chosen": A("Yes."), "rejected": A("No."), "annotator": "ann1", "seconds": 3.5},
    {"prompt": U, "chosen": A("Yes."), "rejected": A("Yep."), "tie": True, "id": "p2"},
    {"prompt": U, "chosen": A("Blue."), "rejected": A("Green."), "label": 0.8, "meta": {"a": 1}},
    {"prompt": U, "completions": [A("a"), A("b"), A("c")], "ranking": [1, 2, 0], "ties": [[0, 2]]},
]
HH = [
    {
        "chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour.",
        "rejected": f"\n\nHuman: Hi {i}\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: No.",
    }
    for i in range(3)
]


def write_all(tmp_path: Path, name: str, records: list[dict]) -> dict[str, str]:
    """The records as every kind of source; returns {kind: source string}."""
    out = {"jsonl": tmp_path / f"{name}.jsonl", "gz": tmp_path / f"{name}.jsonl.gz"}
    write_jsonl(out["jsonl"], records)
    write_jsonl(out["gz"], records)
    # A table has every column in every row (from_pylist takes its columns from the first row alone).
    columns = list(dict.fromkeys(k for r in records for k in r))
    rows = [{k: r.get(k) for k in columns} for r in records]
    out["parquet"] = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), out["parquet"])
    out["folder"] = tmp_path / f"{name}-ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(out["folder"]))
    dict_dir = tmp_path / f"{name}-dict"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
    ).save_to_disk(str(dict_dir))
    sources = {kind: str(p) for kind, p in out.items()}
    sources["dict"] = f"{dict_dir}:train"
    return sources


def test_gz_is_compressed_and_every_source_kind_is_recognised(tmp_path):
    sources = write_all(tmp_path, "chats", CHATS)
    assert Path(sources["gz"]).read_bytes()[:2] == b"\x1f\x8b"  # write_jsonl gzips a .gz name
    kinds = {k: RecordSource(s).kind for k, s in sources.items()}
    assert kinds == {
        "jsonl": "jsonl",
        "gz": "jsonl",
        "parquet": "parquet",
        "folder": "folder",
        "dict": "folder",
    }
    assert RecordSource("Anthropic/hh-rlhf/harmless-base#default:test").kind == "hub"
    hub = RecordSource("Anthropic/hh-rlhf/harmless-base#default:test")
    assert (hub.repo, hub.data_dir, hub.config, hub.split) == (
        "Anthropic/hh-rlhf",
        "harmless-base",
        "default",
        "test",
    )
    assert RecordSource("imdb").split == "train"
    for kind, source in sources.items():
        assert [n for n, _ in read_records(source)] == [1, 2, 3], kind


@pytest.mark.parametrize("kind", ["gz", "parquet", "folder", "dict"])
def test_chats_and_prompts_load_identically_from_every_source(tmp_path, kind):
    sources = write_all(tmp_path, "chats", CHATS)
    assert load_chats(sources[kind], require_assistant=True) == load_chats(sources["jsonl"]) == CHATS
    assert load_prompts(sources[kind]) == load_prompts(sources["jsonl"])
    assert load_prompts(sources[kind])[1]["messages"] == CHATS[1]["messages"][:2]


@pytest.mark.parametrize("kind", ["gz", "parquet", "folder", "dict"])
def test_comparisons_load_identically_from_every_source(tmp_path, kind):
    sources = write_all(tmp_path, "cmp", COMPARISONS)
    groups, reference = load_comparisons(sources[kind]), load_comparisons(sources["jsonl"])
    assert [g.record for g in reference] == COMPARISONS
    for g, ref in zip(groups, reference, strict=True):
        assert (g.prompt, g.completions, g.pairs, g.record, g.line) == (
            ref.prompt, ref.completions, ref.pairs, ref.record, ref.line
        )  # fmt: skip
    assert [p.target for p in groups[3].pairs] == [1.0, 1.0, 0.5]  # the ranking's tie survived


@pytest.mark.parametrize("kind", ["gz", "parquet", "folder", "dict"])
def test_hh_conversion_is_identical_from_every_source(tmp_path, kind):
    sources = write_all(tmp_path, "hh", HH)
    converted = list(convert_records("hh", sources[kind]))
    assert converted == list(convert_records("hh", sources["jsonl"]))
    assert [r["meta"]["source_line"] for r in converted] == [1, 2, 3]
    assert converted[0]["rejected"] == A("No.")


def test_trl_conversational_rows_from_parquet(tmp_path):
    trl = [
        {"chosen": U + A("Yes."), "rejected": U + A("No.")},
        {"chosen": U + A("Blue."), "rejected": U + A("Red.")},
    ]
    sources = write_all(tmp_path, "trl", trl)
    out = list(convert_records("trl", sources["parquet"]))
    assert out == list(convert_records("trl", sources["jsonl"]))
    assert [(r["prompt"], r["chosen"]) for r in out] == [(U, A("Yes.")), (U, A("Blue."))]


def test_a_bad_row_names_the_source_row_and_field(tmp_path):
    bad = [
        *COMPARISONS[:2],
        {"prompt": U, "chosen": [{"role": "user", "content": "x"}], "rejected": A("No.")},
    ]
    sources = write_all(tmp_path, "bad", bad)
    with pytest.raises(
        RlhfkitError, match=r"bad\.parquet: row 3: field 'chosen\[0\]\.role': expected one of assistant"
    ):
        load_comparisons(sources["parquet"])
    with pytest.raises(RlhfkitError, match=r"bad\.jsonl\.gz:3: field 'chosen\[0\]\.role'"):
        load_comparisons(sources["gz"])
    with pytest.raises(RlhfkitError, match=r"bad-dict:train: row 3: field 'chosen\[0\]\.role'"):
        load_comparisons(sources["dict"])
    hh = write_all(tmp_path, "hhbad", [HH[0], {"chosen": "Assistant: hi", "rejected": HH[0]["rejected"]}])
    with pytest.raises(
        RlhfkitError, match=r"hhbad\.parquet: row 2: field 'chosen': expected a transcript starting"
    ):
        list(convert_records("hh", hh["parquet"]))


def test_broken_files_and_folders_are_one_clear_error(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RlhfkitError, match=r"x\.parquet: not a readable Parquet file"):
        load_chats(tmp_path / "x.parquet")
    (tmp_path / "y.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(RlhfkitError, match=r"y\.jsonl\.gz: not a readable gzip file"):
        load_chats(tmp_path / "y.jsonl.gz")
    (tmp_path / "plain").mkdir()
    with pytest.raises(
        RlhfkitError, match="plain: is a directory, expected a JSONL file, a Parquet file or a folder"
    ):
        load_chats(tmp_path / "plain")
    sources = write_all(tmp_path, "chats", CHATS)
    with pytest.raises(
        RlhfkitError, match=r"expected a split of this DatasetDict as DIR:SPLIT \(splits: train, test\)"
    ):
        load_chats(sources["dict"].rsplit(":", 1)[0])
    with pytest.raises(RlhfkitError, match="missing.jsonl: file not found"):
        load_chats(tmp_path / "missing.jsonl")


def test_without_the_hf_extra_parquet_asks_for_it(tmp_path, monkeypatch):
    sources = write_all(tmp_path, "chats", CHATS)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if pyarrow were not installed
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(
        RlhfkitError, match=r"needs the optional packages datasets and pyarrow: pip install 'rlhfkit\[hf\]'"
    ):
        load_chats(sources["parquet"])
    with pytest.raises(RlhfkitError, match=r"pip install 'rlhfkit\[hf\]'"):
        load_chats(sources["folder"])
    assert load_chats(sources["gz"]) == CHATS  # JSONL needs neither


def test_offline_hub_name_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    # HF_HUB_OFFLINE=1, as the environment variable sets it when the libraries are imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    assert main(["data", "check", "--kind", "comparisons", "Anthropic/hh-rlhf/harmless-base:test"]) == 1
    err = capsys.readouterr().err
    assert "Anthropic/hh-rlhf/harmless-base:test: not a local file or folder" in err
    assert "cannot be reached (offline)" in err and str(tmp_path / "cache") in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_convert_and_check_accept_every_source(tmp_path, capsys):
    hh = write_all(tmp_path, "hh", HH)
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", "--from", "hh", "--in", hh["gz"], "--out", str(out)]) == 0
    reference = out.read_text(encoding="utf-8")
    for kind in ("parquet", "folder", "dict"):
        assert main(["data", "convert", "--from", "hh", "--in", hh[kind], "--out", str(out)]) == 0
        assert out.read_text(encoding="utf-8") == reference, kind
    cmp = write_all(tmp_path, "cmp", COMPARISONS)
    chats = write_all(tmp_path, "chats", CHATS)
    capsys.readouterr()
    for kind in ("gz", "parquet", "folder", "dict"):
        assert main(["data", "check", "--kind", "comparisons", cmp[kind]]) == 0
        assert main(["data", "check", "--kind", "chats", chats[kind]]) == 0
    printed = capsys.readouterr().out
    assert printed.count("4 valid comparisons (6 judged pairs)") == 4 and printed.count("3 valid chats") == 4


def _closed_port() -> int:
    """A local port nothing listens on: a Hub endpoint that refuses at once, without touching the network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_hub(tmp_path: Path) -> dict:
    """The environment of a machine without the Hub: no HF_HUB_OFFLINE, an endpoint that refuses, no cache."""
    return {
        "HF_HUB_OFFLINE": None,
        "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "HF_HOME": str(tmp_path / "hf-home"),
    }


def test_unreachable_hub_dataset_fails_fast_without_offline_mode(tmp_path):
    """Without HF_HUB_OFFLINE, `datasets` retried for ~30 s; the models' TCP probe answers in well under 5 s."""
    out = tmp_path / "pairs.jsonl"
    args = ["data", "convert", "--from", "hh", "--in", "Anthropic/hh-rlhf/harmless-base:test", "--out", out]
    run = run_cli_measured(args, tmp_path, env=_no_hub(tmp_path), warm=("datasets",))
    assert run.code == 1, run.err
    assert run.err.strip().splitlines() == [run.err.strip()] and "Traceback" not in run.err
    assert "Anthropic/hh-rlhf/harmless-base:test: not a local file or folder" in run.err
    assert "cannot be reached (offline)" in run.err
    assert run.seconds <= 5, f"{run.seconds:.1f} s"
    assert not out.exists()


def test_hf_prefix_means_the_hub_even_when_a_folder_has_the_name(tmp_path):
    """`hf:Anthropic/hh-rlhf` with a folder Anthropic/hh-rlhf under the working directory: `datasets` read the
    folder; the prefix must mean the Hub (here unreachable, so the offline error)."""
    local = tmp_path / "Anthropic" / "hh-rlhf"
    local.mkdir(parents=True)
    write_jsonl(local / "test.jsonl", HH)
    out = tmp_path / "pairs.jsonl"
    args = ["data", "convert", "--from", "hh", "--in", "hf:Anthropic/hh-rlhf:test", "--out", out]
    run = run_cli_measured(args, tmp_path, env=_no_hub(tmp_path), cwd=tmp_path)
    assert run.code == 1, run.err
    assert "error: Anthropic/hh-rlhf:test: not a local file or folder" in run.err
    assert "cannot be reached (offline)" in run.err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["parquet", "folder"])
def test_a_missing_column_is_named_with_the_columns_present(tmp_path, capsys, kind):
    sources = write_all(tmp_path, "hh", [{"chosen": r["chosen"], "id": f"x{i}"} for i, r in enumerate(HH)])
    capsys.readouterr()  # the `datasets` progress bars of write_all
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", "--from", "hh", "--in", sources[kind], "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"rlhfkit: error: {sources[kind]}: no column 'rejected' (columns: chosen, id)\n"
    assert not out.exists()
    chats = write_all(tmp_path, "chats", [{"text": "hi", "id": "a"}])
    with pytest.raises(RlhfkitError, match=r"chats\.parquet: no column 'messages' \(columns: text, id\)"):
        load_chats(chats["parquet"])
