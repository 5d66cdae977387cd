"""`evaluate --max-tool-turns`: responses are tool-using episodes, scored on their final turn, with tool stats."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.data.tool_calls import ToolCall, call_text
from rlhfkit.errors import RlhfkitError
from rlhfkit.evaluate import EvalConfig, run, tool_episodes
from rlhfkit.generation import Completion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scripted_generate(model, contexts, params, *, pad_token_id, tokenizer, batch_size):
    """First turn: a calculator call (one the calculator refuses for the "bad" prompt); after the tool turn: read its result."""
    out = []
    for ids in contexts:
        context = tokenizer.decode(ids)
        if "<|tool|>" not in context:
            expr = "1 / 0" if "bad" in context else "3 * 4"
            text = call_text(ToolCall("calculator", {"expr": expr}))
        else:
            result = json.loads(context.rsplit("<|tool|>", 1)[1].split("<|end|>")[0]).get("result", "none")
            text = f"So the answer is {result}."
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [
            tokenizer.convert_tokens_to_ids("<|end|>")
        ]
        out.append(Completion(ids, [], "stop", text))
    return out


def test_evaluate_plays_tool_episodes_and_verifies_their_final_turn(policy_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tool_episodes, "generate", scripted_generate)
    rows = [
        {
            "id": "right",
            "messages": [{"role": "user", "content": "what is 3 times 4?"}],
            "meta": {"answer": 12, "kind": "mul"},
        },
        {
            "id": "off",
            "messages": [{"role": "user", "content": "what is 3 times 5?"}],
            "meta": {"answer": 15, "kind": "mul"},
        },
        {
            "id": "bad",
            "messages": [{"role": "user", "content": "bad: 3 times 4?"}],
            "meta": {"answer": 12, "kind": "typo"},
        },
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = EvalConfig(
        models={"m": str(policy_dir)},
        prompts=str(tmp_path / "p.jsonl"),
        out=str(tmp_path / "ev"),
        judge="gold",
        quiet=True,
        bootstrap=0,
        pass_samples=2,
        max_tool_turns=2,
        max_new_tokens=20,  # per turn: room in the micro model's 128 positions for the tool turn and an answer
    )
    acc = run(cfg)["verifiable"]["m"]
    # the calculator's 12 is right for the first prompt only; the bad call's error leaves no number
    assert acc["accuracy"] == pytest.approx(1 / 3)
    assert acc["by_kind"]["mul"]["accuracy"] == 0.5 and acc["by_kind"]["typo"]["accuracy"] == 0.0
    assert acc["tools"] == {"tool_calls_per_episode": 1.0, "valid_call_share": pytest.approx(2 / 3)}
    lines = [json.loads(x) for x in (tmp_path / "ev" / "responses.jsonl").read_text().splitlines()]
    first = lines[0]["responses"]["m"]
    assert first["text"] == "So the answer is 12." and first["verdict"] == "correct"
    assert [t["role"] for t in first["turns"]] == ["assistant", "tool"]
    assert json.loads(first["turns"][1]["content"]) == {"result": 12}


def test_tool_stats_counts_errors_as_invalid_calls():
    turns = [[{"role": "assistant", "content": "c"}, {"role": "tool", "content": '{"error": "no item"}'}], []]
    assert tool_episodes.tool_stats(turns) == {"tool_calls_per_episode": 0.5, "valid_call_share": 0.0}
    assert tool_episodes.tool_stats([[]]) == {"tool_calls_per_episode": 0.0, "valid_call_share": None}


def test_negative_max_tool_turns_is_refused(policy_dir, tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    cfg = EvalConfig(models={"m": str(policy_dir)}, prompts=str(tmp_path / "p.jsonl"), max_tool_turns=-1)
    with pytest.raises(RlhfkitError, match="max_tool_turns"):
        run(cfg)
