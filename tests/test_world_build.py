"""`rlhfkit world build`: determinism, counts, formats and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.cli import main
from rlhfkit.world import build_world
from rlhfkit.world.tasks import CATEGORIES

FILES = ("corpus.jsonl", "sft.jsonl", "sft_val.jsonl", "prompts.jsonl", "eval_prompts.jsonl", "world.json")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a = build_world(tmp_path / "a", seed=3, size="small")
    b = build_world(tmp_path / "b", seed=3, size="small")
    c = build_world(tmp_path / "c", seed=4, size="small")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a == b and a["fingerprint"] != c["fingerprint"]


def test_small_world_files_have_the_shared_formats(tmp_path):
    info = build_world(tmp_path, seed=0, size="small")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    corpus = read(tmp_path / "corpus.jsonl")
    assert set(corpus[0]) == {"text"} and 150_000 < info["files"]["corpus.jsonl"]["text_bytes"] < 260_000
    sft = read(tmp_path / "sft.jsonl")
    assert len(sft) == info["files"]["sft.jsonl"]["count"] == 600
    for chat in sft:
        roles = [m["role"] for m in chat["messages"]]
        assert roles[-1] == "assistant" and roles[-2] == "user" and chat["messages"][-1]["content"].strip()
        assert chat["category"] in CATEGORIES and chat["id"].startswith("sft-")
        assert (roles[0] == "system") == (chat["category"] == "persona")
    prompts = read(tmp_path / "prompts.jsonl")
    evals = read(tmp_path / "eval_prompts.jsonl")
    for rec in prompts + evals:
        assert (
            rec["messages"][-1]["role"] == "user" and rec["category"] in CATEGORIES and "task" in rec["meta"]
        )
    assert {r["category"] for r in prompts} == set(CATEGORIES) == {r["category"] for r in evals}
    train_q = {r["messages"][-1]["content"] for r in prompts}
    assert not train_q & {r["messages"][-1]["content"] for r in evals}  # held out: no shared questions
    assert len({tuple(m["content"] for m in r["messages"]) for r in prompts}) == len(prompts)  # de-duplicated


def test_default_world_sizes_and_imperfections(tmp_path):
    info = build_world(tmp_path, seed=0)
    files = info["files"]
    assert files["sft.jsonl"]["count"] >= 10_000
    assert files["prompts.jsonl"]["count"] >= 2_000 and files["eval_prompts.jsonl"]["count"] >= 500
    assert 2_000_000 <= files["corpus.jsonl"]["text_bytes"] <= 3_000_000
    sft = read(tmp_path / "sft.jsonl")
    unknowable = [c for c in sft if c["category"] == "unknowable"]
    fabricated = sum(c["quality"] in ("fabricated", "hedged_fabricated") for c in unknowable) / len(
        unknowable
    )
    assert 0.33 < fabricated < 0.47
    ambiguous = [c for c in sft if c["category"] == "ambiguous"]
    assert 0.18 < sum(c["quality"] == "continuation" for c in ambiguous) / len(ambiguous) < 0.33
    words = sorted(len(c["messages"][-1]["content"].split()) for c in sft)
    assert 10 <= words[len(words) // 2] <= 60


def test_corpus_repeats_facts_and_reads_like_the_web(tmp_path):
    build_world(tmp_path, seed=0, size="small")
    texts = [r["text"] for r in read(tmp_path / "corpus.jsonl")]
    joined = "\n".join(texts)
    assert any(t.startswith("Baking chocolate cake\n\n") or "wrote:" in t for t in texts)
    forum = [t for t in texts if " wrote: " in t]
    assert forum and all(
        t.split(" wrote: ", 1)[1].count("?") >= 2 for t in forum
    )  # questions follow questions
    assert joined.count("capital of") > 100


def test_cli_world_build_prints_counts(tmp_path, capsys):
    assert main(["world", "build", "--out", str(tmp_path), "--size", "small", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "sft.jsonl" in out and "persona" in out and "fingerprint" in out
    assert json.loads((tmp_path / "world.json").read_text())["seed"] == 1
