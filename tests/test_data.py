"""Data formats: JSONL with line numbers, chat and comparison validation, HH-RLHF and TRL converters."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from cli_measured import run_cli_measured
from rlhfkit.cli import main
from rlhfkit.data.chats import load_chats
from rlhfkit.data.comparisons import load_comparisons, prompt_item, ranking_pairs
from rlhfkit.data.convert import convert_records, parse_hh_transcript
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.errors import RlhfkitError

P = [{"role": "user", "content": "Is the sky blue?"}]


def A(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def write_lines(path: Path, records: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


def test_jsonl_line_numbers_skip_blank_lines_and_round_trip(tmp_path):
    f = write_lines(tmp_path / "a.jsonl", [{"x": 1}, "", {"x": "é"}])
    assert [(n, r["x"]) for n, r in read_jsonl(f)] == [(1, 1), (3, "é")]
    write_jsonl(tmp_path / "b.jsonl", [{"x": "é"}])
    assert "é" in (tmp_path / "b.jsonl").read_text(encoding="utf-8")  # ensure_ascii=False


@pytest.mark.parametrize(
    ("line", "expected"),
    [("{not json", ":2: not valid JSON"), ("[1, 2]", ":2: expected a JSON object, got list")],
)
def test_jsonl_bad_lines_name_file_and_line(tmp_path, line, expected):
    f = write_lines(tmp_path / "bad.jsonl", [{"x": 1}, line])
    with pytest.raises(RlhfkitError, match="bad.jsonl" + expected):
        list(read_jsonl(f))


def test_load_chats_keeps_every_valid_record_and_metadata(tmp_path):
    recs = [
        {"messages": P + A("Yes."), "id": "a", "category": "facts", "extra": 1},
        {"messages": P, "id": "b"},
    ]
    chats = load_chats(write_lines(tmp_path / "c.jsonl", recs))
    assert chats == recs
    with pytest.raises(RlhfkitError, match=r"c.jsonl:2: field 'messages': expected at least one assistant"):
        load_chats(tmp_path / "c.jsonl", require_assistant=True)


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"id": "x"}, "messages", "expected a list of messages, got NoneType"),
        ({"messages": []}, "messages", "expected a non-empty list"),
        ({"messages": ["hi"]}, r"messages\[0\]", "expected an object"),
        (
            {"messages": [{"role": "bot", "content": "x"}]},
            r"messages\[0\].role",
            "expected one of system, user",
        ),
        (
            {"messages": P + [{"role": "assistant"}]},
            r"messages\[1\].content",
            "expected a string, got nothing",
        ),
        ({"messages": P, "id": 3}, "id", "expected a string, got int"),
    ],
)
def test_malformed_chats_give_file_line_and_field(tmp_path, record, field, problem):
    f = write_lines(tmp_path / "chats.jsonl", [{"messages": P + A("ok")}, record])
    with pytest.raises(RlhfkitError, match=rf"chats.jsonl:2: field '{field}': {problem}"):
        load_chats(f)


def test_pair_targets_for_preference_tie_soft_label_and_margin(tmp_path):
    recs = [
        {"prompt": P, "chosen": A("Yes."), "rejected": A("No."), "annotator": "ann1", "seconds": 3.5,
         "created_at": "2024-05-01T12:00:00Z", "category": "facts", "margin": 2.0},
        {"prompt": P, "chosen": A("Yes."), "rejected": A("Yep."), "tie": True},
        {"prompt": P, "chosen": A("Yes."), "rejected": A("No."), "label": 0.8, "flags": ["checked"], "meta": {"a": 1}},
    ]  # fmt: skip
    groups = load_comparisons(write_lines(tmp_path / "p.jsonl", recs))
    assert [(p.better, p.worse, p.target, p.margin) for g in groups for p in g.pairs] == [
        (0, 1, 1.0, 2.0),
        (0, 1, 0.5, 0.0),
        (0, 1, 0.8, 0.0),
    ]
    assert groups[0].annotator == "ann1" and groups[0].category == "facts" and groups[0].line == 1
    assert groups[0].completions == [A("Yes."), A("No.")]


def test_ranking_expands_to_all_pairs_best_over_worse_with_ties():
    pairs = ranking_pairs([2, 0, 3, 1], ties=[[3, 0]])
    assert len(pairs) == 6  # C(4, 2)
    assert {(p.better, p.worse) for p in pairs} == {(2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1)}
    assert [p.target for p in pairs if p.is_tie] == [0.5] and next(p for p in pairs if p.is_tie).better == 0


def test_mixed_file_keeps_every_valid_record(tmp_path):
    ranking = {"prompt": P, "completions": [A("a"), A("b"), A("c")], "ranking": [1, 2, 0], "ties": [[0, 2]]}
    pair = {"prompt": P, "chosen": A("Yes."), "rejected": A("No.")}
    groups = load_comparisons(write_lines(tmp_path / "m.jsonl", [ranking, "", pair, ranking]))
    assert [len(g.pairs) for g in groups] == [3, 1, 3]
    assert [g.line for g in groups] == [1, 3, 4]


GOOD_PAIR = {"prompt": P, "chosen": A("Yes."), "rejected": A("No.")}
GOOD_RANKING = {"prompt": P, "completions": [A("a"), A("b"), A("c")], "ranking": [0, 1, 2]}


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"prompt": "hi"}, "prompt", "expected a list of messages, got str"),
        ({"chosen": [{"role": "user", "content": "x"}]}, r"chosen\[0\].role", "expected one of assistant"),
        ({"rejected": None}, "rejected", "expected a list of messages"),
        ({"tie": "yes"}, "tie", "expected true or false"),
        ({"margin": "big"}, "margin", "expected a finite number"),
        ({"label": 1.5}, "label", r"expected a probability in \[0, 1\]"),
        ({"tie": True, "label": 0.9}, "label", "a tie has label 0.5"),
        ({"tie": True, "margin": 1.0}, "margin", "a tie cannot have a margin"),
        ({"seconds": -1}, "seconds", "expected a number >= 0"),
        ({"created_at": "yesterday"}, "created_at", "expected an ISO-8601 date-time"),
        ({"annotator": 7}, "annotator", "expected a string"),
        ({"flags": "x"}, "flags", "expected a list of strings"),
        ({"meta": []}, "meta", "expected an object"),
        ({"ranking": [0, 1]}, "ranking", "not allowed in a pair record"),
    ],
)
def test_malformed_pairs_give_file_line_and_field(tmp_path, change, field, problem):
    f = write_lines(tmp_path / "cmp.jsonl", [GOOD_PAIR, GOOD_RANKING, {**GOOD_PAIR, **change}])
    with pytest.raises(RlhfkitError, match=rf"cmp.jsonl:3: field '{field}': {problem}"):
        load_comparisons(f)


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (
            {"completions": [A("a")], "ranking": [0]},
            "completions",
            "expected a list of at least 2 completions",
        ),
        (
            {"completions": [A("a"), "b"], "ranking": [0, 1]},
            r"completions\[1\]",
            "expected a list of messages",
        ),
        ({"ranking": [0, 1]}, "ranking", r"expected each index 0..2 exactly once \(missing \[2\]"),
        (
            {"ranking": [0, 1, 1]},
            "ranking",
            r"expected each index 0..2 exactly once \(missing \[2\], out of range or repeated \[1\]",
        ),
        (
            {"ranking": [0, 1, 3]},
            "ranking",
            r"expected each index 0..2 exactly once \(missing \[2\], out of range or repeated \[3\]",
        ),
        ({"ranking": "0,1,2"}, "ranking", "expected a list of completion indices"),
        ({"ties": [[0, 0]]}, r"ties\[0\]", "expected two different indices"),
        ({"ties": [[0, 5]]}, r"ties\[0\]", "expected two different indices in 0..2"),
        ({"margin": 1.0}, "margin", "not allowed in a ranking record"),
    ],
)
def test_malformed_rankings_give_file_line_and_field(tmp_path, change, field, problem):
    f = write_lines(tmp_path / "cmp.jsonl", [GOOD_RANKING, {**GOOD_RANKING, **change}])
    with pytest.raises(RlhfkitError, match=rf"cmp.jsonl:2: field '{field}': {problem}"):
        load_comparisons(f)


def test_record_that_is_neither_pair_nor_ranking(tmp_path):
    f = write_lines(tmp_path / "cmp.jsonl", [{"prompt": P, "response": A("x")}])
    with pytest.raises(RlhfkitError, match=r"cmp.jsonl:1: expected a pair .* or a ranking"):
        load_comparisons(f)


HH = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:  Mix flour and water.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: No.",
}


def test_hh_transcripts_become_prompt_and_final_responses(tmp_path):
    assert parse_hh_transcript(HH["rejected"], "f", 1, "rejected")[-1] == {
        "role": "assistant",
        "content": "No.",
    }
    f = write_lines(tmp_path / "hh.jsonl", [HH])
    [rec] = list(convert_records("hh", f))
    assert rec["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How do I bake bread?"},
    ]
    assert rec["chosen"] == A("Mix flour and water.") and rec["rejected"] == A("No.")
    assert rec["id"] == "hh-1" and rec["meta"] == {"source": "hh", "source_line": 1}


def test_hh_branching_at_user_turn_and_bad_transcripts_are_errors(tmp_path):
    branch = {
        "chosen": "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: D",
        "rejected": "\n\nHuman: A\n\nAssistant: E\n\nHuman: F\n\nAssistant: G",
    }
    f = write_lines(tmp_path / "hh.jsonl", [HH, branch])
    with pytest.raises(RlhfkitError, match=r"hh.jsonl:2: field 'chosen': the two conversations branch"):
        list(convert_records("hh", f))
    f = write_lines(tmp_path / "hh.jsonl", [HH, {"chosen": "Assistant: hi", "rejected": HH["rejected"]}])
    with pytest.raises(RlhfkitError, match=r"hh.jsonl:2: field 'chosen': expected a transcript starting"):
        list(convert_records("hh", f))


def test_bundled_hh_file_converts_completely():
    src = (
        Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "hh-rlhf-harmless" / "test-public.jsonl"
    )
    records = list(convert_records("hh", src))
    assert len(records) == sum(1 for line in src.read_text(encoding="utf-8").splitlines() if line.strip())
    assert all(r["prompt"][-1]["role"] == "user" for r in records)


def test_trl_formats_explicit_implicit_standard_conversational(tmp_path):
    convo = P + A("Yes.")
    recs = [
        {"prompt": "Is the sky blue?", "chosen": "Yes.", "rejected": "No.", "score_chosen": 9},
        {"prompt": P, "chosen": A("Yes."), "rejected": A("No."), "id": "t2", "category": "facts"},
        {"chosen": convo, "rejected": P + A("No.")},
        {"chosen": "Q: Is the sky blue? A: Yes.", "rejected": "Q: Is the sky blue? A: Nope."},
    ]
    out = list(convert_records("trl", write_lines(tmp_path / "trl.jsonl", recs)))
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in out[:3]] == [(P, A("Yes."), A("No."))] * 3
    assert out[0]["meta"]["score_chosen"] == 9 and out[1]["id"] == "t2" and out[1]["category"] == "facts"
    assert out[3]["prompt"] == [{"role": "user", "content": "Q: Is the sky blue? A:"}]
    assert (out[3]["chosen"], out[3]["rejected"]) == (A("Yes."), A("Nope."))


def test_trl_unpaired_and_invalid_records_are_errors(tmp_path):
    f = write_lines(tmp_path / "trl.jsonl", [{"prompt": "p", "completion": "c", "label": True}])
    with pytest.raises(RlhfkitError, match=r"trl.jsonl:1: field 'chosen': missing: unpaired preference"):
        list(convert_records("trl", f))
    f = write_lines(tmp_path / "trl.jsonl", [{"prompt": P, "chosen": [{"role": "user"}], "rejected": "No."}])
    with pytest.raises(RlhfkitError, match=r"trl.jsonl:1: field 'chosen\[0\].role'"):
        list(convert_records("trl", f))


def test_cli_convert_and_check(tmp_path, capsys):
    src = write_lines(tmp_path / "hh.jsonl", [HH, HH])
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", "--from", "hh", "--in", str(src), "--out", str(out)]) == 0
    assert main(["data", "check", "--kind", "comparisons", str(out)]) == 0
    assert "2 valid comparisons (2 judged pairs)" in capsys.readouterr().out
    bad = write_lines(tmp_path / "bad.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "label": 2}])
    assert main(["data", "check", "--kind", "comparisons", str(bad)]) == 1
    assert "bad.jsonl:2: field 'label': expected a probability" in capsys.readouterr().err
    assert (
        main(["data", "convert", "--from", "hh", "--in", str(bad), "--out", str(tmp_path / "x.jsonl")]) == 1
    )
    assert not (tmp_path / "x.jsonl").exists()  # nothing half-written


def test_prompts_drop_the_final_assistant_turn_and_end_with_a_user_turn(tmp_path):
    from rlhfkit.data.chats import load_prompts

    user, reply = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}
    path = tmp_path / "chats.jsonl"
    write_jsonl(path, [{"id": "a", "messages": [user], "meta": {"k": 1}}, {"messages": [user, reply]}])
    prompts = load_prompts(path)
    assert [p["messages"] for p in prompts] == [[user], [user]] and prompts[0]["meta"] == {"k": 1}
    write_jsonl(path, [{"messages": [user]}, {"messages": [user, reply, reply]}])
    with pytest.raises(RlhfkitError, match=r"chats.jsonl:2: field 'messages\[1\].role': expected a prompt"):
        load_prompts(path)
    write_jsonl(path, [{"messages": [{"role": "system", "content": "Be brief."}]}])
    with pytest.raises(RlhfkitError, match=r"chats.jsonl:1: field 'messages\[0\].role': expected a prompt"):
        load_prompts(path)


def _old_split_by_line(lines: list[str]) -> set[int]:
    order = list(range(len(lines)))
    random.Random(0).shuffle(order)
    return set(order[: max(1, int(len(lines) * 0.1))])


def test_comparisons_split_by_prompt_item_and_rankings_split_as_before(tmp_path):
    # CAI labels: one pair line per pair of candidates, 6 per prompt item; no held-out item may be trained on.
    pairs = [{"id": f"p{i}-{a}-{b}", "prompt": [{"role": "user", "content": f"q{i % 7}"}], "chosen": [], "rejected": [],
              "meta": {"cai": {"candidates_id": f"p{i}"}}} for i in range(40) for a, b in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]]  # fmt: skip
    (tmp_path / "comparisons").mkdir()
    (tmp_path / "comparisons" / "all.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))

    def split() -> int:
        folder = tmp_path / "comparisons"
        return main(["data", "split", "--in", str(folder / "all.jsonl"), "--out", str(folder)])

    assert split() == 0
    items = {
        name: [json.loads(ln)["meta"]["cai"]["candidates_id"] for ln in (tmp_path / "comparisons" / f"{name}.jsonl").open()]
        for name in ("train", "eval")
    }  # fmt: skip
    assert len(set(items["eval"])) == 4 and len(items["eval"]) == 24 and len(items["train"]) == 216
    assert not set(items["train"]) & set(items["eval"])

    # RLHF rankings: one line per item (ids `<item>:<annotator>`), even when prompt texts repeat: the same
    # split as the old split by line, so existing runs keep their files.
    ranks = [
        {"id": f"prompt-{i:06d}:sim-{i % 3}", "prompt": [{"role": "user", "content": f"q{i % 5}"}]}
        for i in range(57)
    ]
    lines = [json.dumps(r) for r in ranks]
    (tmp_path / "comparisons" / "all.jsonl").write_text("".join(ln + "\n" for ln in lines))
    assert split() == 0
    held = _old_split_by_line(lines)
    assert (tmp_path / "comparisons" / "eval.jsonl").read_text().splitlines() == [
        lines[i] for i in sorted(held)
    ]
    assert prompt_item(ranks[3]) == "prompt-000003"


# ----------------------------------------------------------------- streaming with caps (issue 25, item 3)


def _gzip_of_one_line(path: Path, mebibytes: int) -> Path:
    """A small .jsonl.gz (a few hundred KB) that expands to one line of `mebibytes` MiB: a decompression bomb."""
    chunk = b" " * 2**20
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(b'{"chosen": "')
        for _ in range(mebibytes):
            fh.write(chunk)
        fh.write(b'"}\n')
    return path


def test_a_line_past_the_cap_fails_before_it_is_held_whole(tmp_path):
    bomb = _gzip_of_one_line(tmp_path / "bomb.jsonl.gz", 128)
    assert bomb.stat().st_size < 2**20
    out = tmp_path / "pairs.jsonl"
    run = run_cli_measured(["data", "convert", "--from", "hh", "--in", bomb, "--out", out], tmp_path)
    assert run.code == 1, run.err
    assert run.err.strip().splitlines() == [
        f"rlhfkit: error: {bomb}:1: line longer than 16,777,216 bytes (the --max-line-bytes cap; raise it "
        f"with --max-line-bytes or RLHFKIT_MAX_LINE_BYTES if the record is meant to be this long)"
    ]
    assert not out.exists()
    # Read whole, the line took ~400 MB (its bytes, their decoded text, the parsed string); at the cap, ~50 MB
    # (16 MiB read, joined from the buffer's chunks).
    assert run.rss_growth_mb < 128, f"peak RSS grew {run.rss_growth_mb:.0f} MB"


def test_max_line_bytes_flag_and_environment_raise_the_cap(tmp_path, capsys, monkeypatch):
    long_line = write_lines(tmp_path / "long.jsonl", [{**HH, "note": "x" * 5000}])
    out = tmp_path / "pairs.jsonl"
    args = ["data", "convert", "--from", "hh", "--in", str(long_line), "--out", str(out)]
    assert main([*args, "--max-line-bytes", "4KiB"]) == 1
    assert f"{long_line}:1: line longer than 4,096 bytes" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--max-line-bytes", "8KiB"]) == 0
    monkeypatch.setenv("RLHFKIT_MAX_LINE_BYTES", "4096")  # commands without the flag (sft, reward...)
    with pytest.raises(RlhfkitError, match=r"long\.jsonl:1: line longer than 4,096 bytes"):
        load_comparisons(long_line)
    assert main([*args, "--max-line-bytes", "1M"]) == 0  # the flag wins over the environment
    with pytest.raises(SystemExit):
        main([*args, "--max-line-bytes", "lots"])
    assert "expected a positive size such as 64MiB" in capsys.readouterr().err


def test_a_line_of_exactly_the_cap_is_read(tmp_path, monkeypatch):
    line = json.dumps({"x": "y" * 100})
    f = tmp_path / "exact.jsonl"
    f.write_text(line + "\n" + line, encoding="utf-8")  # the last line without its newline
    monkeypatch.setenv("RLHFKIT_MAX_LINE_BYTES", str(len(line)))
    assert len(list(read_jsonl(f))) == 2
    monkeypatch.setenv("RLHFKIT_MAX_LINE_BYTES", str(len(line) - 1))
    with pytest.raises(RlhfkitError, match=r"exact\.jsonl:1: line longer than"):
        list(read_jsonl(f))


def test_convert_streams_in_bounded_memory(tmp_path):
    """20,000 records with 2 KB answers: held in a list before writing, they took ~140 MB more; streamed, the
    peak grows by a few MB (the cap leaves room for allocator noise)."""
    long = HH["chosen"].replace("Mix flour and water.", "Mix flour and water. " * 100)
    src = tmp_path / "many.jsonl.gz"
    write_jsonl(src, ({"chosen": long, "rejected": HH["rejected"], "id": f"r{i}"} for i in range(20_000)))
    out = tmp_path / "pairs.jsonl"
    run = run_cli_measured(["data", "convert", "--from", "hh", "--in", src, "--out", out], tmp_path)
    assert run.code == 0, run.err
    assert out.read_bytes().count(b"\n") == 20_000
    assert run.rss_growth_mb < 40, f"peak RSS grew {run.rss_growth_mb:.0f} MB"


def test_a_failure_half_way_leaves_no_partial_output_and_keeps_the_old_one(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    out.write_text("earlier output\n", encoding="utf-8")
    src = tmp_path / "hh.jsonl.gz"
    write_jsonl(src, [HH] * 3000 + [{"chosen": "no transcript", "rejected": HH["rejected"]}])
    assert main(["data", "convert", "--from", "hh", "--in", str(src), "--out", str(out)]) == 1
    assert f"{src}:3001: field 'chosen'" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "earlier output\n"
    assert {p.name for p in tmp_path.iterdir()} == {"pairs.jsonl", "hh.jsonl.gz"}  # no temporary file left


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.jsonl.gz", "blank.jsonl", "empty-content.jsonl.gz"])
def test_empty_input_is_an_error_not_zero_records(tmp_path, capsys, name):
    src = tmp_path / name
    if name.startswith("blank"):
        src.write_text("\n\n", encoding="utf-8")
    elif name.startswith("empty-content"):
        src.write_bytes(gzip.compress(b""))  # a valid gzip of nothing
    else:
        src.write_bytes(b"")  # 0 bytes, even for .gz
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", "--from", "hh", "--in", str(src), "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"rlhfkit: error: {src}: no records to convert (empty input)\n"
    assert not out.exists()
    with pytest.raises(RlhfkitError, match="no comparison records"):
        load_comparisons(src)  # the loaders agree: no records is an error
