"""`rlhfkit world build --verifiable N`: verifiable tasks with answers, steps and difficulty, held out like the
world's other kinds, worked demonstrations the verifier credits, and the world's own files left untouched."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from rlhfkit.cli import main
from rlhfkit.verifier import answer_of, load_answers, verify
from rlhfkit.world.knowledge import is_eval_entity, load_knowledge
from rlhfkit.world.verifiable import VERIFIABLE_KINDS, sample_verifiable, verifiable_records
from rlhfkit.world.verifiable_demos import verifiable_demonstrations, worked_answer

WORLD_FILES = (
    "corpus.jsonl",
    "sft.jsonl",
    "sft_val.jsonl",
    "prompts.jsonl",
    "eval_prompts.jsonl",
    "world.json",
)
SMALL_SEED0_FINGERPRINT = "4302e91f8b07e539d35f0ba9daad730aed58bbd007fd62dc24069f505d65f606"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_option_leaves_the_world_files_byte_identical(tmp_path, capsys):
    assert main(["world", "build", "--out", str(tmp_path / "a"), "--size", "small"]) == 0
    assert (
        main(["world", "build", "--out", str(tmp_path / "b"), "--size", "small", "--verifiable", "40"]) == 0
    )
    for name in WORLD_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert json.loads((tmp_path / "b" / "world.json").read_text())["fingerprint"] == SMALL_SEED0_FINGERPRINT
    assert not (tmp_path / "a" / "verifiable.json").exists()
    info = json.loads((tmp_path / "b" / "verifiable.json").read_text())
    counts = {name: entry["count"] for name, entry in info["files"].items()}
    assert counts == {"verifiable_train.jsonl": 40, "verifiable_eval.jsonl": 10, "verifiable_sft.jsonl": 40}
    assert "verifiable_train.jsonl" in capsys.readouterr().out
    # every verifiable prompt has an answer for --reward verifier; the world's own prompts have none
    assert len(load_answers(tmp_path / "b" / "verifiable_train.jsonl", required_by="--reward verifier")) == 40
    assert load_answers(tmp_path / "b" / "prompts.jsonl") == {}
    again = tmp_path / "c"
    assert main(["world", "build", "--out", str(again), "--size", "small", "--verifiable", "40"]) == 0
    for name in ("verifiable_train.jsonl", "verifiable_eval.jsonl", "verifiable_sft.jsonl"):
        assert (tmp_path / "b" / name).read_bytes() == (again / name).read_bytes(), name


def test_a_negative_count_is_a_one_line_error(tmp_path, capsys):
    assert main(["world", "build", "--out", str(tmp_path), "--size", "small", "--verifiable", "-1"]) == 1
    assert "--verifiable: expected an integer >= 0" in capsys.readouterr().err


def test_answers_follow_from_the_knowledge_base_and_difficulty_counts_the_steps():
    kb = load_knowledge()
    price = {p["name"]: p["price"] for p in kb.pools["products"]}
    rng = random.Random(0)
    for _ in range(40):
        task = sample_verifiable("price_total", rng)
        meta = task.meta
        lookups = [s for s in meta["steps"] if s["op"] == "lookup"]
        assert all(price[s["of"]] == s["value"] and s["of"] in task.question for s in lookups)
        assert meta["steps"][-1]["value"] == meta["answer"] and meta["difficulty"] == len(meta["steps"])
    task = sample_verifiable("born_gap", rng)
    born = {s["name"]: int(s["born"]) for s in kb.pools["scientists"] if s["born"]}
    a, b = (s["of"] for s in task.meta["steps"][:2])
    assert task.meta["answer"] == born[b] - born[a] > 0 and task.meta["difficulty"] == 3
    task = sample_verifiable("cheapest", rng)
    prices = {c: price[next(n for n in price if n.startswith(c + " "))] for c in task.meta["choices"]}
    assert task.meta["answer"] in task.meta["choices"]
    want = min if "cheapest" in task.question else max
    assert prices[task.meta["answer"]] == want(prices.values())


def test_eval_tasks_use_held_out_templates_and_entities():
    train = verifiable_records(300, random.Random(1), "train", "t")
    evals = verifiable_records(100, random.Random(2), "eval", "e")
    assert Counter(r["kind"] for r in train) == dict.fromkeys(VERIFIABLE_KINDS, 60)
    assert not {r["messages"][0]["content"] for r in train} & {r["messages"][0]["content"] for r in evals}

    def held(rec: dict) -> list[bool]:
        pool = VERIFIABLE_KINDS[rec["kind"]].pool
        return [is_eval_entity(pool, s["of"]) for s in rec["meta"]["steps"] if s["op"] == "lookup"]

    assert not any(any(held(r)) for r in train)
    assert all(any(held(r)) for r in evals)
    for kind in VERIFIABLE_KINDS.values():
        assert not set(kind.train) & set(kind.eval)
    assert len({r["meta"]["difficulty"] for r in train}) >= 5  # a spread of difficulties to report by


def test_demonstrations_are_credited_except_their_documented_slips():
    demos = verifiable_demonstrations(300, random.Random(0), "d")
    verdicts = Counter(
        (d["quality"], verify(d["messages"][-1]["content"], answer_of(d)).reason) for d in demos
    )
    assert set(verdicts) == {("good", "correct"), ("direct", "correct"), ("arithmetic_slip", "wrong")}
    assert 0.05 < verdicts[("arithmetic_slip", "wrong")] / len(demos) < 0.16
    slip = next(d for d in demos if d["quality"] == "arithmetic_slip")["messages"][-1]["content"]
    assert "=" in slip  # a slip shows its (wrong) working, carried to the end


def test_a_slip_is_carried_through_every_later_step():
    meta = {
        "kind": "price_total",
        "answer": 1165,
        "steps": [
            {"op": "lookup", "of": "A phone", "field": "price", "value": 349},
            {"op": "mul", "args": [3, 349], "value": 1047},
            {"op": "lookup", "of": "B umbrella", "field": "price", "value": 59},
            {"op": "mul", "args": [2, 59], "value": 118},
            {"op": "add", "args": [1047, 118], "value": 1165},
        ],
    }
    for seed in range(20):
        text = worked_answer(meta, random.Random(seed), "arithmetic_slip")
        results = [int(x.split(".")[0].strip(" $").replace(",", "")) for x in text.split(" = ")[1:]]
        final = verify(text, answer_of({"answer": 1165}))
        assert final.reason == "wrong" and int(final.stated.strip("$").replace(",", "")) == results[-1], text
        money = re.findall(r"= \$([\d,]+)|\$([\d,]+) \+ \$([\d,]+)", text)
        first, second = money[0][0], money[1][0]  # the two products as the working shows them
        left, right = next(m[1:] for m in money if m[1])
        assert (left, right) == (first, second), text  # the sum adds what the products said
