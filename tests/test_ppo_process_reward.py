"""`--reward verifier+process`: the world's step-by-step check of a tool-using episode, added to the outcome."""

from __future__ import annotations

import json

import pytest

from conftest import PRICE_TOTAL_STEPS as STEPS
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo.config import GRPOConfig, check_config
from rlhfkit.ppo.process_reward import process_score
from rlhfkit.ppo.verifier_reward import term_weights, verifier_reward_fn


def tool(content: dict) -> dict:
    return {"role": "tool", "content": json.dumps(content)}


def test_process_score_credits_right_lookups_and_the_right_calculator_result_once():
    kahal = tool({"item": "Kahal M7 bicycle", "price": 1119})
    mone = tool({"item": "Mone V5 laptop", "price": 1449})
    assert process_score(STEPS, [kahal, mone, tool({"result": 6255})]) == 1.0
    # a repeated look-up earns nothing more; a wrong item, an error and a wrong sum earn nothing
    wrong = [kahal, kahal, tool({"item": "Barno V4 laptop", "price": 1129}), tool({"error": "x"})]
    assert process_score(STEPS, [*wrong, tool({"result": 3357})]) == pytest.approx(1 / 3)
    assert process_score(STEPS, []) == 0.0
    # comparisons have only their look-ups to check
    cheapest = [STEPS[0], STEPS[2], {"op": "min", "args": [1119, 1449], "value": 1119}]
    assert process_score(cheapest, [mone]) == 0.5


def test_verifier_plus_process_adds_the_weighted_step_share(tmp_path):
    prompt = [{"role": "user", "content": "How much do 3 Kahal M7 bicycles and 2 Mone V5 laptops cost?"}]
    write_jsonl(tmp_path / "p.jsonl", [{"messages": prompt, "meta": {"answer": 6255, "steps": STEPS}}])
    score, _ = verifier_reward_fn("verifier+process=0.4", str(tmp_path / "p.jsonl"))
    assert score.reads_turns
    turns = [[tool({"item": "Kahal M7 bicycle", "price": 1119})], []]
    got = score([prompt, prompt], ["So the answer is $6,255.", "So the answer is $1."], [[], []], turns=turns)
    assert got == [pytest.approx(1 + 0.4 / 3), 0.0]
    assert term_weights("verifier+format+process") == {"format": 0.2, "process": 0.5}
    assert not getattr(verifier_reward_fn("verifier", str(tmp_path / "p.jsonl"))[0], "reads_turns", False)


def test_the_process_term_needs_tool_turns():
    cfg = GRPOConfig(policy="p", prompts="x.jsonl", out="o", reward="verifier+process")
    with pytest.raises(RlhfkitError, match="--max-tool-turns"):
        check_config(cfg, False)
