"""`world build --verifiable N --tools`: demonstrations that solve the verifiable tasks with the world's tools,
with documented mistakes, and every file of the build without `--tools` left the same bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.data.chats import load_chats
from rlhfkit.data.tool_calls import ToolCall
from rlhfkit.train.chat_tokens import IGNORE, tokenize_chats
from rlhfkit.verifier import answer_of, verify
from rlhfkit.world.tools import run_tool
from rlhfkit.world.verifiable_tool_demos import verifiable_tool_demonstrations


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def calls(chat: dict) -> list[ToolCall]:
    return [
        ToolCall(c["function"]["name"], c["function"]["arguments"])
        for m in chat["messages"]
        for c in m.get("tool_calls", [])
    ]


def test_tools_add_one_file_and_change_no_other_byte(tmp_path):
    base = ["world", "build", "--size", "small", "--verifiable", "20"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--tools"]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    assert sorted(p.name for p in b.iterdir()) == sorted(
        [*(p.name for p in a.iterdir()), "verifiable_tools_sft.jsonl"]
    )
    for path in a.iterdir():
        if path.name != "verifiable.json":
            assert path.read_bytes() == (b / path.name).read_bytes(), path.name
    info_a, info_b = (
        json.loads((a / "verifiable.json").read_text()),
        json.loads((b / "verifiable.json").read_text()),
    )
    assert info_b["files"]["verifiable_tools_sft.jsonl"]["count"] == 20
    del info_b["files"]["verifiable_tools_sft.jsonl"], info_b["tool_flaw_rates"]
    assert info_a == info_b


def test_tools_need_verifiable_tasks(tmp_path, capsys):
    assert main(["world", "build", "--size", "small", "--out", str(tmp_path), "--tools"]) == 1
    assert "give --verifiable N" in capsys.readouterr().err


def test_demonstrations_use_the_tools_and_their_mistakes_are_the_documented_ones():
    chats = verifiable_tool_demonstrations(300, random.Random(0), "vtool")
    quality = {q: sum(c["quality"] == q for c in chats) for q in ("good", "wrong_lookup", "no_calculator")}
    assert sum(quality.values()) == 300 and quality["wrong_lookup"] >= 15 and quality["no_calculator"] >= 10
    for chat in chats:
        messages, meta = chat["messages"], chat["meta"]
        # every tool turn is the real output of the call before it
        for before, after in zip(messages, messages[1:]):
            if before.get("tool_calls"):
                function = before["tool_calls"][0]["function"]
                assert after == {
                    "role": "tool",
                    "content": run_tool(ToolCall(function["name"], function["arguments"])),
                }
        assert messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls")
        verdict = verify(messages[-1]["content"], answer_of(chat))
        looked_up = [c.arguments["item"] for c in calls(chat) if c.name == "lookup"]
        asked = [s["of"] for s in meta["steps"] if s["op"] == "lookup"]
        used_calculator = any(c.name == "calculator" for c in calls(chat))
        arithmetic = meta["kind"] in ("price_total", "born_gap", "founded_gap")
        if chat["quality"] == "good":
            assert verdict.correct, (messages[-1]["content"], meta["answer"])
            assert looked_up == asked and used_calculator  # comparisons and counts too: min(), (p < limit)
            result = json.loads(messages[-2]["content"])["result"]
            if meta["kind"] != "cheapest":  # the answer copies the calculator's number as the tool wrote it
                assert str(result) in messages[-1]["content"], (messages[-1]["content"], result)
        elif chat["quality"] == "wrong_lookup":
            assert len(looked_up) == len(asked) and sum(x != y for x, y in zip(looked_up, asked)) == 1
        else:
            assert looked_up == asked and not used_calculator and arithmetic and not verdict.correct
    assert (
        sum(
            not verify(c["messages"][-1]["content"], answer_of(c)).correct
            for c in chats
            if c["quality"] == "wrong_lookup"
        )
        >= 10
    )


def test_sft_learns_the_tool_calls_of_a_built_file(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    assert (
        main(["world", "build", "--size", "small", "--verifiable", "10", "--tools", "--out", str(tmp_path)])
        == 0
    )
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    chats = load_chats(tmp_path / "verifiable_tools_sft.jsonl", require_assistant=True)
    ids, labels = tokenize_chats(tok, chats, 4096, "verifiable_tools_sft.jsonl")[0]
    learned = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert '{"name": "lookup", "arguments": {"item": ' in learned and '"price"' not in learned


@pytest.mark.parametrize("seed", [0, 1])
def test_the_demonstrations_are_a_pure_function_of_the_seed(seed):
    one = verifiable_tool_demonstrations(20, random.Random(seed), "v")
    assert one == verifiable_tool_demonstrations(20, random.Random(seed), "v")


def test_practice_chats_ask_about_made_up_catalogues_and_their_tools_answer_from_them():
    from rlhfkit.world.knowledge import load_knowledge

    world = load_knowledge()
    chats = verifiable_tool_demonstrations(60, random.Random(0), "v", practice=0.5)
    practice = [c for c in chats if c["meta"].get("practice")]
    assert len(practice) == 30 and {c["kind"] for c in practice} == {c["kind"] for c in chats}
    invented = 0
    for chat in chats:
        steps = [s for s in chat["meta"]["steps"] if s["op"] == "lookup"]
        known = [
            any(world.find(pool, s["of"]) for pool in ("products", "scientists", "towns")) for s in steps
        ]
        if not chat["meta"].get("practice") or chat["kind"] == "born_gap":  # scientists stay the world's own
            assert all(known)
            continue
        assert not any(known)  # products and towns of a made-up catalogue, none named as the world's
        invented += len(steps)
        if chat["quality"] == "good":
            # the lookups answered from the same catalogue the question was drawn from, and the answer holds
            results = [json.loads(m["content"]) for m in chat["messages"] if m["role"] == "tool"]
            looked = [next(v for k, v in r.items() if k != "item") for r in results if "item" in r]
            assert looked == [s["value"] for s in steps]
            assert verify(chat["messages"][-1]["content"], answer_of(chat)).correct
    assert invented >= 40
    # any share, not only 1/k ones: 70% of 60 chats (a stride of round(1 / 0.7) made it all 60)
    shares = verifiable_tool_demonstrations(60, random.Random(0), "v", practice=0.7)
    assert sum(bool(c["meta"].get("practice")) for c in shares) == 42


def test_tool_practice_is_a_share(tmp_path, capsys):
    argv = ["world", "build", "--size", "small", "--verifiable", "10", "--tools", "--out", str(tmp_path)]
    assert main([*argv, "--tool-practice", "1.5"]) == 1
    assert "--tool-practice" in capsys.readouterr().err
