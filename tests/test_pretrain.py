"""Stage 1: a micro model learns, its checkpoint loads in transformers, and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlhfkit.cli import main

MICRO = [
    "--preset",
    "micro",
    "--seq-len",
    "32",
    "--batch-size",
    "8",
    "--micro-batch-size",
    "8",
    "--lr",
    "3e-3",
]


def _pretrain_args(corpus, tok, out, steps, *extra):
    return ["pretrain", "--data", str(corpus), "--tokenizer", str(tok), "--out", str(out), "--max-steps", str(steps),
            "--warmup-steps", "5", "--eval-every", str(steps), "--log-every", "1", "--eval-tokens", "2048",
            "--sample-tokens", "4", *MICRO, *extra]  # fmt: skip


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def test_micro_model_loss_falls_and_checkpoint_loads_in_transformers(corpus_file, tokenizer_dir, tmp_path):
    out = tmp_path / "base"
    assert main(_pretrain_args(corpus_file, tokenizer_dir, out, 60, "--save-every", "30")) == 0
    rows = _metrics(out)
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < 0.6 * first, (first, last)
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["stage"] == "pretrain" and manifest["seed"] == 0
    assert manifest["metrics"]["step"] == 60 and manifest["metrics"]["val_bpb"] > 0
    assert manifest["data_fingerprint"]

    # The checkpoint is a plain Hugging Face folder: AutoModelForCausalLM gives the same logits as our weights.
    from safetensors.torch import load_file

    hf = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ours.load_state_dict(load_file(str(out / "checkpoint" / "model.safetensors")))
    x = torch.randint(0, hf.config.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(hf(x).logits, ours(x).logits)
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()
    assert (out / "generation_config.json").exists()


def test_same_seed_same_result(corpus_file, tokenizer_dir, tmp_path):
    for name in ("a", "b"):
        assert main(_pretrain_args(corpus_file, tokenizer_dir, tmp_path / name, 8, "--seed", "3")) == 0
    assert [r["loss"] for r in _metrics(tmp_path / "a")] == [r["loss"] for r in _metrics(tmp_path / "b")]


def test_killed_run_resumes_from_checkpoint_and_matches_uninterrupted_run(
    corpus_file, tokenizer_dir, tmp_path
):
    steps = 40
    ref = tmp_path / "ref"
    assert main(_pretrain_args(corpus_file, tokenizer_dir, ref, steps, "--save-every", "5")) == 0

    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "rlhfkit.cli",
        *_pretrain_args(corpus_file, tokenizer_dir, out, steps, "--save-every", "5"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    state = out / "checkpoint" / "state.json"
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["step"] >= 10:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert 10 <= killed_at < steps, "the run should have been killed mid-way"
    assert not (out / "rlhfkit.json").exists()

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {out / 'checkpoint'} at step" in done.stdout
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # no gaps, no duplicates
    # Data and RNG are functions of (seed, step): the resumed run ends exactly where the uninterrupted one does.
    ref_rows = _metrics(ref)
    assert abs(rows[-1]["loss"] - ref_rows[-1]["loss"]) < 1e-4
    assert json.loads((out / "rlhfkit.json").read_text())["metrics"]["step"] == steps
