"""Audits: annotators compare the policy's answers with the reference's every K steps; the stop rule follows them."""

from __future__ import annotations

import json
import random

import pytest
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo.audit import _labels, _policy_share, load_audit_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _world_prompts(n: int):
    """Demo-world prompts with an answer the gold judge approves of."""
    from rlhfkit.world.answers import good_response
    from rlhfkit.world.prompts import sample_prompt

    rng = random.Random(3)
    records, good = [], []
    for i in range(n):
        messages, task, meta = sample_prompt("factual", rng)
        records.append({"id": f"q{i}", "messages": messages, "category": "factual", "meta": meta})
        good.append(good_response(task, rng))
    return records, good


def test_the_annotators_verdicts_count_for_the_side_that_wrote_the_answer():
    records, good = _world_prompts(40)
    junk = ["Banana the of seven river." for _ in records]
    labels = _labels(records, good, junk, seed=0, step=5)
    assert {label["meta"]["policy_index"] for label in labels} == {0, 1}  # shown in either order
    assert all(len(label["completions"]) == 2 and label["annotator"] for label in labels)  # comparison format
    assert all(label["meta"]["audit_step"] == 5 for label in labels)
    good_wins = sum(_policy_share(label) for label in labels) / len(labels)
    junk_wins = sum(_policy_share(label) for label in _labels(records, junk, good, seed=0, step=5)) / len(
        labels
    )
    assert good_wins > 0.9 and junk_wins < 0.1
    other = _labels(records, good, junk, seed=0, step=10)  # another audit: a new session, fresh noise
    assert [label["seconds"] for label in other] != [label["seconds"] for label in labels]


def test_audit_prompts_must_be_world_tasks_and_enough(prompts_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"messages": [{"role": "user", "content": "hi"}], "meta": {"source": "hh"}}])
    with pytest.raises(RlhfkitError, match=r"bad.jsonl, line 1: field 'meta'"):
        load_audit_prompts(str(bad), 1)
    with pytest.raises(RlhfkitError, match="fewer than --audit-size 100"):
        load_audit_prompts(str(prompts_file), 100)


def _argv(policy_dir, prompts_file, rm_dir, out, *extra):
    return ["ppo", "--policy", str(policy_dir), "--reward", str(rm_dir), "--prompts", str(prompts_file),
            "--audit-prompts", str(prompts_file), "--audit-size", "8", "--audit-every", "2", "--out", str(out),
            "--steps", "6", "--batch-size", "8", "--minibatch-size", "4", "--epochs", "1", "--max-new-tokens", "8",
            "--device", "cpu", "--value-model", "head", "--lr", "3e-3", *extra]  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ppo_audits_the_policy_and_keeps_the_best_audited_one(policy_dir, prompts_file, rm_dir, tmp_path):
    out = tmp_path / "ppo"
    assert main(_argv(policy_dir, prompts_file, rm_dir, out, "--stop-patience", "2", "--audit-keep")) == 0
    audits = _rows(out / "audits.jsonl")
    steps = [a["step"] for a in audits]
    assert steps[0] == 0 and all(b - a == 2 for a, b in zip(steps, steps[1:]))  # the start, then every 2
    assert len(_rows(out / "audit_labels.jsonl")) == 8 * len(audits)
    assert all(0 <= a["audit_win"] <= 1 and 0 <= a["audit_gold_win"] <= 1 for a in audits)
    metrics = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in metrics if "audit_win" in r] == steps[1:]
    trained_on = {row["id"] for row in _rows(out / "samples.jsonl")}
    assert trained_on and not trained_on & {f"p{i}" for i in range(8)}  # the audit's prompts are held out

    ema, emas = None, []  # the rule's moving average (smoothing 0.5), replayed from the logged win rates
    for a in audits:
        ema = a["audit_win"] if ema is None else 0.5 * ema + 0.5 * a["audit_win"]
        emas.append(ema)
    best = steps[max(range(len(emas)), key=lambda i: (emas[i], -i))]
    rule = json.loads((out / "rlhfkit.json").read_text())["stop_rule"]
    assert rule["signal"] == "audit" and rule["best_step"] == best and rule["kept_step"] == best
    assert rule["stopped_at"] == steps[-1] and (steps[-1] == 6 or steps[-1] == best + 2)
    # The output is the audited policy of the best step, weight for weight.
    final = load_file(str(out / "model.safetensors"))
    kept = load_file(str(out / "audits" / f"step-{best}" / "model.safetensors"))
    assert final.keys() == kept.keys() and all((final[k] == kept[k]).all() for k in final)
    if best != steps[-1]:
        last = load_file(str(out / "audits" / f"step-{steps[-1]}" / "model.safetensors"))
        assert any((final[k] != last[k]).any() for k in final)  # training moved on, the output did not

    weights = (out / "model.safetensors").read_bytes()
    assert main(_argv(policy_dir, prompts_file, rm_dir, out, "--stop-patience", "2", "--audit-keep")) == 0
    assert (out / "model.safetensors").read_bytes() == weights  # a rerun does not train on
    assert _rows(out / "audits.jsonl") == audits  # nor audit again


def test_a_resumed_run_audits_as_an_uninterrupted_one(policy_dir, prompts_file, rm_dir, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(_argv(policy_dir, prompts_file, rm_dir, whole, "--save-every", "2")) == 0
    assert main(_argv(policy_dir, prompts_file, rm_dir, split, "--save-every", "2", "--steps", "4")) == 0
    assert main(_argv(policy_dir, prompts_file, rm_dir, split, "--save-every", "2")) == 0
    assert _rows(split / "audits.jsonl") == _rows(whole / "audits.jsonl")
    assert _rows(split / "audit_labels.jsonl") == _rows(whole / "audit_labels.jsonl")


def test_a_lora_policy_audits_against_its_base_with_the_adapters_off(
    policy_dir, prompts_file, rm_dir, tmp_path
):
    full, lora = tmp_path / "full", tmp_path / "lora"
    assert main(_argv(policy_dir, prompts_file, rm_dir, full, "--steps", "2")) == 0
    assert main(_argv(policy_dir, prompts_file, rm_dir, lora, "--steps", "2", "--lora-r", "4")) == 0
    # The reference answers: a frozen copy of the SFT model, or the LoRA policy with its adapters disabled.
    assert (lora / "audit_reference.jsonl").read_text() == (full / "audit_reference.jsonl").read_text()
    assert [a["step"] for a in _rows(lora / "audits.jsonl")] == [0, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"audit_every": 0}, "--audit-every 0"),
        ({"audit_size": 0}, "--audit-size 0"),
        ({"audit_smoothing": 1.0}, "--audit-smoothing"),
        ({"max_tool_turns": 2}, "not with --max-tool-turns"),
    ],
)
def test_bad_audit_options_are_refused(prompts_file, change, message):
    from rlhfkit.ppo.config import PPOConfig, check_config

    cfg = PPOConfig(
        policy="p", reward="r", prompts=str(prompts_file), audit_prompts=str(prompts_file), **change
    )
    with pytest.raises(RlhfkitError, match=message):
        check_config(cfg, False)
