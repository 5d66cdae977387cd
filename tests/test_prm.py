"""Process reward models (`rlhfkit.prm`): the world's step labels, `prm label` episodes, a PRM that learns to tell
right steps from wrong ones, and its score as the process term of `--reward verifier+process`."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from conftest import PRICE_TOTAL_STEPS
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.data.tool_calls import ToolCall, call_text
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import Completion
from rlhfkit.prm.steps import step_labels, step_texts
from rlhfkit.world.files import stream_rng
from rlhfkit.world.tools import run_tool
from rlhfkit.world.verifiable import verifiable_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def called(name: str, **arguments) -> list[dict]:
    """An assistant turn making the call, and the world's answer to it."""
    call = ToolCall(name, arguments)
    return [  # as `ppo.environment.step` records a turn: its whole text, then the parsed call
        {"role": "assistant", "content": call_text(call), "call": call_text(call)},
        {"role": "tool", "content": run_tool(call)},
    ]


def test_each_tool_call_is_labelled_from_the_tasks_solution():
    turns = (
        called("lookup", item="Kahal M7 bicycle")  # right
        + called("lookup", item="Kahal M7 bicycle")  # a repeat
        + called("lookup", item="Lomar K3 phone")  # an item the task does not need
        + called("lookup", item="No Such Thing")  # an error
        + called("calculator", expr="3 * 1119")  # an intermediate number of the solution
        + called("calculator", expr="3 * 1119 + 2 * 1448")  # a wrong total
        + called("lookup", item="mone v5 laptop")  # right (case is the tool's business)
        + called("calculator", expr="3 * 1119 + 2 * 1449")  # the answer
        + called("weather", city="Paris")  # a tool the world does not have
    )
    assert step_labels(PRICE_TOTAL_STEPS, 6255.0, turns) == [1, 0, 0, 0, 1, 0, 1, 1, 0]
    texts = step_texts([{"role": "user", "content": "How much?"}], turns)
    assert len(texts) == 9
    assert texts[0].startswith("User: How much?\nAssistant: {") and texts[0].endswith('"price": 1119}')
    assert texts[-1].count("\nTool: ") == 9 and texts[-1].count('{"name": ') == 9  # each call once
    # what the model wrote before its call stays, the call line is not repeated
    thinking = [
        {"role": "assistant", "content": "Let me look.\n" + turns[0]["call"], "call": turns[0]["call"]}
    ]
    assert step_texts([], [*thinking, turns[1]]) == [
        f"Assistant: Let me look.\n{turns[0]['call']}\nTool: {turns[1]['content']}"
    ]


def tasks(n: int, seed: int = 0) -> list[dict]:
    return verifiable_records(n, stream_rng(seed, "test_prm"), "train", "t")


def test_prm_label_plays_episodes_labels_them_and_resumes(policy_dir, tmp_path, monkeypatch):
    """The sampler is scripted (a random micro model makes no calls): even prompts look up the task's first
    item, odd ones an item it does not need; then every episode answers."""
    from rlhfkit.evaluate import tool_episodes
    from rlhfkit.prm.label import PRMLabelConfig, run
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(policy_dir)
    policy = tmp_path / "policy"  # the micro model with room for the long task prompts (RoPE: no new weights)
    shutil.copytree(policy_dir, policy)
    config = json.loads((policy / "config.json").read_text())
    (policy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    records = tasks(6)
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, records)
    first_item = {r["messages"][0]["content"]: r["meta"]["steps"][0]["of"] for r in records}
    answers = {r["messages"][0]["content"]: r["meta"]["answer"] for r in records}
    answers = {q: f"the {a}" if isinstance(a, str) else str(a) for q, a in answers.items()}

    def generate(model, contexts, params, **_kw):
        out = []
        for ids in contexts:
            text = tok.decode(ids)
            question = next(q for q in first_item if q in text)
            wrong = list(first_item).index(question) % 2
            item = "Zzz" if wrong else first_item[question]
            reply = (
                f"So the answer is {answers[question] if not wrong else 'unknown'}."
                if "<|tool|>" in text
                else call_text(ToolCall("lookup", {"item": item}))
            )
            ids = tok(reply, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|end|>")]
            out.append(Completion(ids, [], "stop", reply))
        return out

    monkeypatch.setattr(tool_episodes, "generate", generate)
    out = tmp_path / "steps.jsonl"
    cfg = PRMLabelConfig(policy=str(policy), prompts=str(prompts), out=str(out), samples=2, chunk=4)
    run(cfg)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 12
    assert [r["labels"] for r in rows] == [[1], [1], [0], [0]] * 3
    assert [r["correct"] for r in rows] == [True, True, False, False] * 3  # the verifier's verdict, kept
    # a torn last chunk is played again, the whole chunks before it are kept as they are
    out.write_text("\n".join(out.read_text().splitlines()[:10]) + "\n")
    asked = []

    def counting(model, contexts, params, **kw):
        asked.extend(tok.decode(c) for c in contexts)
        return generate(model, contexts, params, **kw)

    monkeypatch.setattr(tool_episodes, "generate", counting)
    run(cfg)
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows
    replayed = {q for q in first_item if any(q in text for text in asked)}
    assert replayed == {r["messages"][0]["content"] for r in records[4:]}
    asked.clear()  # a finished file is not played again, short last chunk included
    run(cfg)
    assert asked == [] and [json.loads(x) for x in out.read_text().splitlines()] == rows


def test_prm_label_names_a_prompt_without_solution_steps(policy_dir, tmp_path):
    from rlhfkit.prm.label import PRMLabelConfig, run

    records = tasks(2)
    del records[1]["meta"]["steps"]
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, records)
    with pytest.raises(RlhfkitError, match=r"prompts.jsonl:2: field 'meta.steps'"):
        run(PRMLabelConfig(policy=str(policy_dir), prompts=str(prompts), out=str(tmp_path / "s.jsonl")))


def synthetic_episodes(n: int, seed: int) -> list[dict]:
    """Episodes of real tasks whose look-ups are right, repeated or of unknown items (errors), labelled by
    `step_labels`: what `prm label` writes."""
    rng = random.Random(seed)
    rows = []
    for record in tasks(n, seed):
        steps = record["meta"]["steps"]
        items = [s["of"] for s in steps if s["op"] == "lookup"]
        turns = []
        for item in items[:2]:
            choice = rng.random()
            turns += called("lookup", item=item if choice < 0.5 else "Nothing " + str(rng.randint(0, 9)))
        labels = step_labels(steps, record["meta"]["answer"], turns)
        rows.append(
            {"prompt": record["messages"], "turns": turns, "labels": labels, "final": "", "correct": False}
        )
    return rows


def test_a_prm_learns_to_tell_right_steps_from_wrong_ones_and_scores_the_process_term(policy_dir, tmp_path):
    from rlhfkit.ppo.verifier_reward import verifier_reward_fn
    from rlhfkit.prm.score import ProcessModel
    from rlhfkit.prm.train import PRMConfig, run
    from rlhfkit.reward.train import RewardLoopConfig

    data = tmp_path / "steps.jsonl"
    write_jsonl(data, synthetic_episodes(200, 0))
    cfg = PRMConfig(
        model=str(policy_dir),
        data=str(data),
        out=str(tmp_path / "prm"),
        eval_fraction=0.2,
        batch_size=16,
        micro_batch_size=16,
        epochs=3,
        freeze_layers=0,
        device="cpu",
        loop=RewardLoopConfig(lr=3e-3, warmup_steps=5, eval_every=1000, save_every=1000),
    )
    run(cfg)
    report = json.loads((tmp_path / "prm" / "eval.json").read_text())
    assert 0.2 < report["all"]["base_rate"] < 0.8
    assert report["all"]["accuracy"] > 0.9 and report["all"]["auc"] > 0.95

    # the process term: the weakest step's P(right), 0 without calls; the outcome term as before
    prompts_path = tmp_path / "prompts.jsonl"
    records = tasks(3, 5)
    write_jsonl(prompts_path, records)
    item = next(s["of"] for s in records[0]["meta"]["steps"] if s["op"] == "lookup")
    turns = [
        called("lookup", item=item),
        called("lookup", item=item) + called("lookup", item="Nothing 1"),
        [],
    ]
    prompts = [r["messages"] for r in records]
    answers = [
        str(int(r["meta"]["answer"])) if not isinstance(r["meta"]["answer"], str) else "" for r in records
    ]
    texts = [f"So the answer is {a}." for a in answers]
    prm = ProcessModel(tmp_path / "prm")
    probabilities = prm.step_probabilities(prompts, turns)
    assert probabilities[0][0] > 0.8 and probabilities[1][1] < 0.2 and probabilities[2] == []
    means = prm.episode_scores(prompts, turns, "mean")
    assert means == pytest.approx([sum(p) / len(p) if p else 0.0 for p in probabilities])
    fn, _ = verifier_reward_fn("verifier+process=0.5", str(prompts_path), str(tmp_path / "prm"))
    outcome, _ = verifier_reward_fn("verifier", str(prompts_path))
    got = fn(prompts, texts, [[]] * 3, turns=turns)
    base = outcome(prompts, texts, [[]] * 3)
    expected = [b + 0.5 * (min(p) if p else 0.0) for b, p in zip(base, probabilities)]
    assert got == pytest.approx(expected, abs=1e-6)


def test_process_model_needs_the_process_term_and_a_prm_folder(policy_dir, tmp_path):
    from rlhfkit.ppo.config import GRPOConfig, check_config
    from rlhfkit.prm.score import ProcessModel

    cfg = GRPOConfig(
        policy=str(policy_dir), prompts="p.jsonl", reward="verifier", process_model="x", max_tool_turns=2
    )
    with pytest.raises(RlhfkitError, match="--process-model x: it scores the process term"):
        check_config(cfg, False)
    with pytest.raises(RlhfkitError, match="not a process reward model"):
        ProcessModel(policy_dir)


def test_a_malformed_label_file_names_the_line_and_field(tmp_path):
    from rlhfkit.prm.train import load_steps

    rows = synthetic_episodes(3, 1)
    rows[1]["labels"] = rows[1]["labels"] + [1]
    path = tmp_path / "steps.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(RlhfkitError, match=r"steps.jsonl:2: field 'labels'"):
        load_steps(path, 0.1)
