"""Re-running a finished stage (or resuming one killed after its last checkpoint) keeps its final metrics.

Before the fix the loop had nothing to log, so `rlhfkit.json` was rewritten with empty metrics (SFT kept
only `wall_seconds`, PPO `{}`). Each stage here runs to the end, then again with the same command.
"""

from __future__ import annotations

import json
import random

import pytest

from rlhfkit.artifacts import read_manifest
from rlhfkit.cli import main
from rlhfkit.train.loop import last_logged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_last_logged_reads_the_final_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert last_logged(path) == {}
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n\n')
    assert last_logged(path) == {"step": 2, "loss": 1.5}


def test_pretrain_and_sft_rerun_keep_their_metrics(corpus_file, tokenizer_dir, tmp_path):
    base = tmp_path / "base"
    pretrain = ["pretrain", "--data", str(corpus_file), "--tokenizer", str(tokenizer_dir), "--out", str(base),
                "--max-steps", "3", "--warmup-steps", "1", "--eval-every", "3", "--log-every", "1",
                "--eval-tokens", "512", "--sample-tokens", "2", "--preset", "micro", "--seq-len", "32",
                "--batch-size", "4", "--micro-batch-size", "4"]  # fmt: skip
    assert main(pretrain) == 0
    first = read_manifest(base)["metrics"]
    assert first["step"] == 3 and "loss" in first and "val_loss" in first
    assert main(pretrain) == 0  # nothing left to train
    again = read_manifest(base)["metrics"]
    assert {k: again[k] for k in ("step", "loss", "val_loss")} == {
        k: first[k] for k in ("step", "loss", "val_loss")
    }

    rng = random.Random(0)
    chats = [
        {"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w}."}]}
        for w in (rng.choice(["cat", "dog", "apple"]) for _ in range(24))
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in chats))
    sft = ["sft", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "sft"), "--epochs", "0",
           "--max-steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--log-every", "1"]  # fmt: skip
    assert main(sft) == 0
    first = read_manifest(tmp_path / "sft")["metrics"]
    assert first["step"] == 2 and "loss" in first
    assert main(sft) == 0
    again = read_manifest(tmp_path / "sft")["metrics"]
    assert again["step"] == 2 and again["loss"] == first["loss"]


def test_ppo_rerun_keeps_its_metrics(policy_dir, prompts_file, tmp_path):
    from rlhfkit.ppo.trainer import PPOConfig, run

    def reward(prompts, texts, ids) -> list[float]:
        return [len(r) / 10 for r in ids]

    cfg = PPOConfig(policy=str(policy_dir), prompts=str(prompts_file), out=str(tmp_path / "ppo"), steps=2,
                    batch_size=8, epochs=1, minibatch_size=8, max_new_tokens=4, value_model="head",
                    sample_every=0, device="cpu")  # fmt: skip
    run(cfg, reward_fn=reward)
    first = read_manifest(tmp_path / "ppo")["metrics"]
    assert first["step"] == 2 and "reward" in first
    run(cfg, reward_fn=reward)
    again = read_manifest(tmp_path / "ppo")["metrics"]
    assert again == first
