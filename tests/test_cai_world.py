"""Demo-world CAI demonstrations: well-formed chats in the exact request format, answers the gold judge backs."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cai.constitution import load_constitution
from rlhfkit.cai.prompts import ANSWER_A, ANSWER_B, comparison_prompt
from rlhfkit.cai.world_data import FLAW_CRITIQUES, NO_PROBLEM, WorldDataConfig, write_world_data
from rlhfkit.cai.world_eval import labeler_agreement, revision_gains
from rlhfkit.cli import main
from rlhfkit.data.chats import load_chats
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.world.judge import score


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    (out / "world.json").write_text(json.dumps({"seed": 3}))  # the demonstrations only need the world's seed
    return out


@pytest.fixture(scope="module")
def demos(world_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cai_demos")
    info = write_world_data(world_dir, out, WorldDataConfig(chains=120, judgments=120))
    return out, info


def _parse_request(text: str) -> tuple[list[dict], str]:
    """Split 'Here is a conversation:\n<transcript>\n\nCritique request: ...' back into messages and response."""
    body = text.split("\n", 1)[1].split("\n\nCritique")[0]
    messages, role_names = [], {"System": "system", "User": "user", "Assistant": "assistant"}
    for line in body.split("\n"):
        head, sep, rest = line.partition(": ")
        if sep and head in role_names:
            messages.append({"role": role_names[head], "content": rest})
        else:
            messages[-1]["content"] += "\n" + line
    return messages[:-1], messages[-1]["content"]


def test_files_counts_and_chat_format(demos):
    out, info = demos
    assert info["counts"] == {"critiques.jsonl": 120, "revisions.jsonl": 120, "judgments.jsonl": 120,
                              "cai_demos.jsonl": 360}  # fmt: skip
    chats = load_chats(out / "cai_demos.jsonl", require_assistant=True)
    assert len(chats) == 360
    for chat in chats:
        assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
        assert (
            len(chat["messages"][0]["content"].split()) + len(chat["messages"][1]["content"].split()) <= 120
        )
    assert json.loads((out / "cai_world.json").read_text())["counts"] == info["counts"]
    # both answers are taught about equally: no position bias in the demonstrations
    answers = info["answers"]
    assert set(answers) == {ANSWER_A, ANSWER_B} and abs(answers[ANSWER_A] - answers[ANSWER_B]) <= 30


def test_critiques_name_the_actual_flaw_and_revisions_fix_it(demos):
    out, info = demos
    rules = load_constitution()
    critiques = load_chats(out / "critiques.jsonl")
    revisions = load_chats(out / "revisions.jsonl")
    assert info["critiques_naming_a_flaw"] >= 60
    improved = 0
    for crit, rev in zip(critiques, revisions):
        demo = crit["meta"]["cai_demo"]
        principle = rules.find(demo["principle"])
        ask = crit["messages"][0]["content"]
        assert ask.endswith("Critique request: " + principle.critique_request)
        prompt, response = _parse_request(ask)
        critique = crit["messages"][1]["content"]
        if demo["covered"]:
            aspect, variants = FLAW_CRITIQUES[demo["flaw"]]
            assert aspect in principle.aspects
            assert any(critique.split(" ")[:4] == v.split(" ")[:4] for v in variants)
            # the revision scores clearly higher with the gold judge than the response it revises
            before = score(prompt, response, demo["task"]).total
            after = score(prompt, rev["messages"][1]["content"], demo["task"]).total
            assert after >= before + 0.5
            improved += 1
        else:
            assert critique in NO_PROBLEM
            assert rev["messages"][1]["content"] == ""  # nothing to fix: the empty reply keeps the response
        assert (
            f"Critique: {critique}\n\nRevision request: {principle.revision_request}"
            in rev["messages"][0]["content"]
        )
    assert improved == info["critiques_naming_a_flaw"]


def test_off_topic_and_claims_unknown_responses_answer_another_prompt(demos):
    out, info = demos
    assert info["flaws_critiqued"].get("off_topic", 0) >= 5
    assert info["flaws_critiqued"].get("claims_unknown", 0) >= 1
    for crit in load_chats(out / "critiques.jsonl"):
        demo = crit["meta"]["cai_demo"]
        if demo["flaw"] not in ("off_topic", "claims_unknown"):
            continue
        prompt, response = _parse_request(crit["messages"][0]["content"])
        # the gold judge scores the answer to another question clearly lower than its own good answer
        assert score(prompt, response, demo["task"]).total <= 9.5
        if (
            demo["flaw"] == "claims_unknown"
        ):  # the honest reply to an unknowable question, where there is an answer
            assert demo["category"] != "unknowable"


def test_judgments_follow_the_gold_judge(demos):
    out, _ = demos
    rules = load_constitution()
    for chat in load_chats(out / "judgments.jsonl"):
        demo = chat["meta"]["cai_demo"]
        principle = rules.find(demo["principle"])
        ask, answer = chat["messages"][0]["content"], chat["messages"][1]["content"]
        gold_a, gold_b = demo["gold"]
        assert answer == (ANSWER_A if gold_a > gold_b else ANSWER_B) and abs(gold_a - gold_b) >= 0.5
        body = ask.split(f"\n\n{principle.comparison_question}\n", 1)
        options = body[1].removesuffix("\nAnswer with (A) or (B).")
        a, b = options.removeprefix("(A) ").split("\n(B) ")
        prompt_text = body[0].removeprefix("Consider this conversation:\n")
        user = prompt_text.split("User: ", 1)[1]
        prompt = ([{"role": "system", "content": prompt_text.split("\n")[0].removeprefix("System: ")}]
                  if prompt_text.startswith("System: ") else []) + [{"role": "user", "content": user}]  # fmt: skip
        assert ask == comparison_prompt(prompt, principle.comparison_question, a, b)
        assert score(prompt, a, demo["task"]).total == pytest.approx(gold_a, abs=1e-3)
        assert score(prompt, b, demo["task"]).total == pytest.approx(gold_b, abs=1e-3)


def test_deterministic_and_cli(world_dir, demos, tmp_path, capsys):
    out, _ = demos
    argv = [
        "cai",
        "world-data",
        "--world",
        str(world_dir),
        "--out",
        str(tmp_path),
        "--chains",
        "120",
        "--judgments",
        "120",
    ]
    assert main(argv) == 0
    assert (tmp_path / "cai_demos.jsonl").read_bytes() == (out / "cai_demos.jsonl").read_bytes()
    assert "120 critiques, 120 revisions, 120 judgments" in capsys.readouterr().out
    assert main(["cai", "world-data", "--world", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 1
    assert "not a demo world folder" in capsys.readouterr().err


def test_world_eval_measures_revisions_and_labels(demos, tmp_path, capsys):
    out, _ = demos
    chains, comparisons = [], []
    for crit, rev in zip(load_chats(out / "critiques.jsonl"), load_chats(out / "revisions.jsonl")):
        demo = crit["meta"]["cai_demo"]
        if not demo["covered"]:
            continue
        prompt, response = _parse_request(crit["messages"][0]["content"])
        better = rev["messages"][1]["content"]
        chains.append({"prompt": prompt, "initial": response, "final": better, "meta": demo["task"]})
        # a labeler that always picks the revision, and one that always picks the original
        comparisons.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": better}],
                            "rejected": [{"role": "assistant", "content": response}], "label": 0.9, "meta": demo["task"]})  # fmt: skip
    gains = revision_gains(chains)
    assert gains["chains"] == len(chains) and gains["gold_after"] > gains["gold_before"] + 1
    assert gains["improved"] == len(chains) and gains["worse"] == 0
    good = labeler_agreement(comparisons)
    assert good["ai_agreement"] == 1.0 and good["ai_mean_prob_of_gold_winner"] == pytest.approx(0.9)
    assert 0.6 < good["simulated_human_agreement"] < 1.0  # noisy people, clear pairs
    flipped = [{**c, "chosen": c["rejected"], "rejected": c["chosen"]} for c in comparisons]
    assert labeler_agreement(flipped)["ai_agreement"] == 0.0
    write_jsonl(tmp_path / "chains.jsonl", chains)
    write_jsonl(tmp_path / "comparisons.jsonl", comparisons)
    rankings = [{"prompt": c["prompt"], "completions": [c["chosen"], c["rejected"], c["chosen"]], "ranking": [0, 1, 2]}
                for c in comparisons[:5]]  # fmt: skip
    write_jsonl(tmp_path / "rankings.jsonl", rankings)
    argv = ["cai", "world-eval", "--chains", str(tmp_path / "chains.jsonl"), "--comparisons",
            str(tmp_path / "comparisons.jsonl"), "--rlhf-comparisons", str(tmp_path / "rankings.jsonl"),
            "--out", str(tmp_path / "eval.json")]  # fmt: skip
    assert main(argv) == 0
    assert "agree with the gold judge on 100.0%" in capsys.readouterr().out
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["revisions"] == gains and saved["labels"] == good
    # these labels name no "ai:" annotator, so they count as people's; 5 rankings of 3 are 15 pairs
    assert saved["human_comparisons"] == len(comparisons)
    assert saved["rlhf_human_rankings"] == 5 and saved["rlhf_human_pairs"] == 15


def test_impossible_budget_is_a_clear_error(world_dir, tmp_path):
    with pytest.raises(RlhfkitError, match="within --max-words 5"):
        write_world_data(world_dir, tmp_path, WorldDataConfig(chains=3, judgments=0, max_words=5))
