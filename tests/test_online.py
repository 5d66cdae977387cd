"""Online iterated RLHF on micro models: the label budget is spent exactly, over disjoint fresh prompts, each
round's reward model learns from every label so far, and an interrupted run resumes at the step it stopped."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.online import OnlineConfig, run
from rlhfkit.online import trainer as online_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(policy_dir, prompts_file, out, **kw) -> OnlineConfig:
    defaults = dict(policy=str(policy_dir), prompts=str(prompts_file), out=str(out), rounds=2, label_budget=8,
                    n=2, off_prompt=1, candidate_tokens=6, pool_size=3,
                    reward_options={"epochs": 0, "max-steps": 2, "batch-size": 2, "micro-batch-size": 2},
                    update_options={"steps": 1, "batch-size": 4, "minibatch-size": 4, "epochs": 1,
                                    "max-new-tokens": 6, "value-model": "head", "device": "cpu"})  # fmt: skip
    defaults.update(kw)
    return OnlineConfig(**defaults)


def test_the_label_budget_is_spent_on_fresh_prompts_and_every_rm_sees_all_labels(
    policy_dir, prompts_file, tmp_path
):
    out = run(_config(policy_dir, prompts_file, tmp_path / "online"))
    rounds = [out / "rounds" / str(r) for r in range(2)]
    ids = [{rec["id"] for _, rec in read_jsonl(d / "prompts.jsonl")} for d in rounds]
    assert [len(x) for x in ids] == [4, 4] and not ids[0] & ids[1]
    rankings = [sum(1 for _ in read_jsonl(d / "comparisons.jsonl")) for d in rounds]
    assert sum(rankings) == 8
    assert sum(1 for _ in read_jsonl(rounds[1] / "all_comparisons.jsonl")) == 8
    # round 1 sampled its candidates from round 0's policy, and the final policy sits in `out`
    cands = [rec for _, rec in read_jsonl(rounds[1] / "candidates.jsonl")]
    assert cands[0]["meta"]["generation"]["model"] == str(rounds[0] / "policy")
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["stage"] == "online" and manifest["metrics"]["rankings"] == 8
    assert json.loads((out / "rounds" / "1" / "rm" / "rlhfkit.json").read_text())["stage"] == "reward"


def test_an_interrupted_run_resumes_at_the_step_where_it_stopped(
    policy_dir, prompts_file, tmp_path, monkeypatch
):
    out = tmp_path / "online"
    real_call = online_trainer._call

    def crash_in_round_1_reward(command, module, config, options):
        if command == "reward train" and "/rounds/1/" in options["out"]:
            raise RlhfkitError("simulated crash")
        real_call(command, module, config, options)

    monkeypatch.setattr(online_trainer, "_call", crash_in_round_1_reward)
    with pytest.raises(RlhfkitError, match="simulated crash"):
        run(_config(policy_dir, prompts_file, out))
    done = json.loads((out / "online.json").read_text())["done"]
    assert "1:all_labels" in done and "1:reward" not in done
    stamp = (out / "rounds" / "0" / "candidates.jsonl").stat().st_mtime_ns
    labels = (out / "rounds" / "1" / "comparisons.jsonl").read_bytes()

    monkeypatch.setattr(online_trainer, "_call", real_call)
    calls = []
    monkeypatch.setattr(
        online_trainer, "_call", lambda command, *rest: (calls.append(command), real_call(command, *rest))
    )
    run(_config(policy_dir, prompts_file, out))
    assert calls == ["reward train", "ppo"]  # only what had not finished
    assert (out / "rounds" / "0" / "candidates.jsonl").stat().st_mtime_ns == stamp
    assert (out / "rounds" / "1" / "comparisons.jsonl").read_bytes() == labels
    with pytest.raises(RlhfkitError, match="another configuration"):
        run(_config(policy_dir, prompts_file, out, rounds=4))


def test_people_in_the_loop_pause_the_round_until_their_export_exists(policy_dir, prompts_file, tmp_path):
    with pytest.raises(RlhfkitError, match="waiting for people's labels"):
        run(_config(policy_dir, prompts_file, tmp_path / "h", annotators="human"))
    assert (tmp_path / "h" / "rounds" / "0" / "candidates.jsonl").exists()
