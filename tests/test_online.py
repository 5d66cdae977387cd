"""Online iterated RLHF on micro models: the label budget is spent exactly, over disjoint fresh prompts, each
round's reward model learns from every label so far, and an interrupted run resumes at the step it stopped."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.online import OnlineConfig, run

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


def _spy_on_stages(monkeypatch, calls: list[str], crash_in: str | None = None) -> None:
    """Record which stage modules' `run` is called; `crash_in`: a part of an output path whose reward training
    fails (as a run killed there would)."""
    import importlib

    for name in ("rlhfkit.generation.candidates", "rlhfkit.world.labels", "rlhfkit.reward.train",
                 "rlhfkit.ppo.trainer"):  # fmt: skip
        module = importlib.import_module(name)

        real = getattr(module.run, "real", module.run)  # a second spy replaces the first

        def spied(config, _real=real, _name=name):
            calls.append(_name.split(".")[-2])
            if crash_in and _name == "rlhfkit.reward.train" and crash_in in config.out:
                raise RlhfkitError("simulated crash")
            return _real(config)

        spied.real = real
        monkeypatch.setattr(module, "run", spied)


def test_an_interrupted_run_resumes_at_the_step_where_it_stopped(
    policy_dir, prompts_file, tmp_path, monkeypatch
):
    from rlhfkit.pipeline.record import RunRecord

    out = tmp_path / "online"
    calls: list[str] = []
    _spy_on_stages(monkeypatch, calls, crash_in="/rounds/1/")
    with pytest.raises(RlhfkitError, match="simulated crash"):
        run(_config(policy_dir, prompts_file, out))
    stages = RunRecord.load(out).stages  # the pipeline's run record, kept by the same runner
    assert stages["1:labels"].status == "done" and stages["1:reward"].status == "failed"
    assert stages["0:policy"].command[:2] == ["rlhfkit", "ppo"]
    stamp = (out / "rounds" / "0" / "candidates.jsonl").stat().st_mtime_ns
    labels = (out / "rounds" / "1" / "comparisons.jsonl").read_bytes()

    calls.clear()
    _spy_on_stages(monkeypatch, calls)
    run(_config(policy_dir, prompts_file, out))
    assert calls == ["reward", "ppo"]  # only what had not finished
    assert (out / "rounds" / "0" / "candidates.jsonl").stat().st_mtime_ns == stamp
    assert (out / "rounds" / "1" / "comparisons.jsonl").read_bytes() == labels
    assert all(s.status == "done" for s in RunRecord.load(out).stages.values())
    with pytest.raises(RlhfkitError, match="another configuration"):
        run(_config(policy_dir, prompts_file, out, rounds=4))


def test_a_run_recorded_by_online_json_resumes_where_it_stopped(
    policy_dir, prompts_file, tmp_path, monkeypatch
):
    """An older rlhfkit kept the finished steps in online.json: they are not run again."""
    out = tmp_path / "online"
    cfg = _config(policy_dir, prompts_file, out)
    calls: list[str] = []
    _spy_on_stages(monkeypatch, calls, crash_in="/rounds/1/")
    with pytest.raises(RlhfkitError, match="simulated crash"):
        run(cfg)
    (out / "pipeline.json").unlink()
    done = ["0:prompts", "0:candidates", "0:labels", "0:all_labels", "0:reward", "0:policy", "1:prompts",
            "1:candidates", "1:labels", "1:all_labels"]  # fmt: skip
    (out / "online.json").write_text(json.dumps({"done": done, "config": dataclasses.asdict(cfg)}))
    calls.clear()
    _spy_on_stages(monkeypatch, calls)
    run(cfg)
    assert calls == ["reward", "ppo"]
    (out / "pipeline.json").unlink()
    (out / "online.json").write_text('{"done": ')
    with pytest.raises(RlhfkitError, match="online.json: not an online run's state"):
        run(cfg)


def test_people_in_the_loop_pause_the_round_until_their_export_exists(policy_dir, prompts_file, tmp_path):
    with pytest.raises(RlhfkitError, match="waiting for people's labels"):
        run(_config(policy_dir, prompts_file, tmp_path / "h", annotators="human"))
    assert (tmp_path / "h" / "rounds" / "0" / "candidates.jsonl").exists()


def test_uncertain_selection_labels_the_sets_the_last_reward_model_is_least_sure_of(
    policy_dir, prompts_file, tmp_path, monkeypatch
):
    from rlhfkit.pipeline.record import RunRecord

    out = tmp_path / "active"
    cfg = _config(policy_dir, prompts_file, out, select="posterior", pool=2)
    run(cfg)
    first, second = out / "rounds" / "0", out / "rounds" / "1"
    assert not (first / "pool.jsonl").exists()  # round 0 has no reward model to choose with
    pool = [rec for _, rec in read_jsonl(second / "pool.jsonl")]
    chosen = [rec for _, rec in read_jsonl(second / "candidates.jsonl")]
    assert len(pool) == 8 and len(chosen) == 4  # twice the prompts sampled, the round's share labelled
    assert {rec["id"] for rec in chosen} <= {rec["id"] for rec in pool}
    ranked = [rec["uncertainty"] for rec in chosen]
    assert ranked == sorted(ranked, reverse=True)
    labelled = [rec for _, rec in read_jsonl(second / "comparisons.jsonl")]
    assert sorted(r["id"].split(":")[0] for r in labelled) == sorted(r["id"] for r in chosen)
    assert json.loads((out / "rlhfkit.json").read_text())["metrics"]["rankings"] == 8
    record = RunRecord.load(out)
    assert record.stages["1:select"].command[:3] == ["rlhfkit", "reward", "select"]
    command = record.stages["1:select"].command
    assert str(first / "rm") in command and command[command.index("--by") + 1] == "posterior"
    # the prompts of all rounds are disjoint: 4 + 8 of the 24
    ids = [{rec["id"] for _, rec in read_jsonl(d / "prompts.jsonl")} for d in (first, second)]
    assert [len(x) for x in ids] == [4, 8] and not ids[0] & ids[1]
    with pytest.raises(RlhfkitError, match="cannot give 2 rounds 4, 24 fresh prompts"):
        run(_config(policy_dir, prompts_file, tmp_path / "big", select="entropy", pool=6))


def test_a_run_made_before_selection_existed_resumes(policy_dir, prompts_file, tmp_path, monkeypatch):
    from rlhfkit.pipeline.record import RunRecord

    out = tmp_path / "online"
    cfg = _config(policy_dir, prompts_file, out)
    run(cfg)
    record = json.loads((out / "pipeline.json").read_text())
    for key in ("select", "pool"):
        del record["config"][key]
    (out / "pipeline.json").write_text(json.dumps(record))
    calls: list[str] = []
    _spy_on_stages(monkeypatch, calls)
    run(cfg)
    assert calls == [] and RunRecord.load(out) is not None
