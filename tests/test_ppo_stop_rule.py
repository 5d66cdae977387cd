"""The watch rule: stop PPO when reward models it never optimizes stop rating its answers higher."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo.stop_rule import StopRule, watch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_rule_stops_after_patience_steps_without_a_new_best_and_keeps_the_best_policy():
    scores = iter([1.0, 2.0, 3.0, 2.5, 2.0, 1.0, 0.0])  # the watch score rises, then falls
    rule = StopRule(patience=2, smoothing=0.0)
    fn = lambda prompts, texts, ids: [next(scores)] * len(texts)  # noqa: E731
    policy = torch.nn.Linear(1, 1, bias=False)
    stopped = None
    for step in range(1, 8):
        torch.nn.init.constant_(policy.weight, float(step))  # "training" moves the weights each step
        logged = watch(rule, fn, step, [[]], ["answer"], policy)
        assert logged["watch_score"] == logged["watch_ema"]  # smoothing 0: the EMA is the score
        if rule.should_stop:
            stopped = step
            break
    assert (rule.best_step, stopped) == (3, 5)
    assert rule.restore_best(policy) == 3 and float(policy.weight.detach()) == 3.0
    resumed = StopRule(patience=2)
    resumed.load(rule.state())
    assert resumed.should_stop and resumed.restore_best(policy) is None  # the best weights are not on disk


def test_the_moving_average_smooths_one_noisy_step():
    rule = StopRule(patience=3, smoothing=0.8)
    emas = [
        rule.observe(s, score, torch.nn.Linear(1, 1))
        for s, score in enumerate([1.0, 1.0, 5.0, 1.0, 1.0, 1.0], 1)
    ]
    assert emas[2] == pytest.approx(1.8) and rule.best_step == 3 and rule.should_stop


def _argv(policy_dir, prompts_file, rm_dir, watch, out, *extra):
    return ["ppo", "--policy", str(policy_dir), "--reward", str(rm_dir), "--watch-reward", str(watch),
            "--prompts", str(prompts_file), "--out", str(out), "--steps", "6", "--batch-size", "8",
            "--minibatch-size", "4", "--epochs", "1", "--max-new-tokens", "8", "--device", "cpu",
            "--value-model", "head", *extra]  # fmt: skip


def test_ppo_logs_the_watch_score_and_stops_by_it(policy_dir, prompts_file, rm_dir, tmp_path):
    watch = tmp_path / "watch"
    shutil.copytree(rm_dir, watch)
    logged = tmp_path / "logged"
    assert main(_argv(policy_dir, prompts_file, rm_dir, watch, logged)) == 0
    rows = [json.loads(line) for line in (logged / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("watch_score" in r and "watch_ema" in r for r in rows)
    assert all(r["watch_corr"] == pytest.approx(1.0) for r in rows)  # the watch model is the optimized one
    assert "stop_rule" not in json.loads((logged / "rlhfkit.json").read_text())  # patience 0: only logged

    stopped = tmp_path / "stopped"
    assert main(_argv(policy_dir, prompts_file, rm_dir, watch, stopped, "--stop-patience", "1")) == 0
    rule = json.loads((stopped / "rlhfkit.json").read_text())["stop_rule"]
    rows = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(rows)), key=lambda i: rows[i]["watch_ema"]) + 1
    assert rule["best_step"] == rule["kept_step"] == best and len(rows) == rule["stopped_at"]
    assert rule["stopped_at"] == 6 or rule["stopped_at"] == best + 1
    weights = (stopped / "model.safetensors").read_bytes()
    assert main(_argv(policy_dir, prompts_file, rm_dir, watch, stopped, "--stop-patience", "1")) == 0
    assert (stopped / "model.safetensors").read_bytes() == weights  # a rerun does not train on


def test_a_patience_without_watch_models_is_an_error(policy_dir, prompts_file, rm_dir, tmp_path):
    from rlhfkit.ppo.config import PPOConfig, check_config

    cfg = PPOConfig(policy=str(policy_dir), reward=str(rm_dir), prompts=str(prompts_file), stop_patience=3)
    with pytest.raises(RlhfkitError, match="--watch-reward .* or --audit-prompts"):
        check_config(cfg, False)
