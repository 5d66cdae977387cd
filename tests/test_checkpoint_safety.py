"""Resuming reads `<out>/checkpoint/` without unpickling it: a planted file cannot run code, a damaged one is
one clear error, and the state that comes back is exactly the state that was saved."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.errors import RlhfkitError
from rlhfkit.train.safe_state import load_state, save_state


def test_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
    }
    save_state(state, tmp_path, "trainer")
    back = load_state(tmp_path, "trainer")

    assert back["rng"]["python"] == state["rng"]["python"]
    np_state, np_back = state["rng"]["numpy"], back["rng"]["numpy"]
    assert np_back[0] == np_state[0] and (np_back[1] == np_state[1]).all() and np_back[2:] == np_state[2:]
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # tuples come back
    for pid, entry in state["optimizer"]["state"].items():
        for key, value in entry.items():
            assert torch.equal(back["optimizer"]["state"][pid][key], value)
    random.setstate(back["rng"]["python"])
    np.random.set_state(back["rng"]["numpy"])
    optimizer.load_state_dict(back["optimizer"])


@pytest.mark.parametrize("damage", ["garbage json", "foreign format", "missing tensor", "truncated tensors"])
def test_a_damaged_state_is_one_clear_error(tmp_path, damage):
    save_state({"x": torch.ones(2), "y": (1, 2)}, tmp_path, "trainer")
    meta, tensors = tmp_path / "trainer.json", tmp_path / "trainer.safetensors"
    if damage == "garbage json":
        meta.write_text("{not json")
    elif damage == "foreign format":
        meta.write_text(json.dumps({"format": "other", "state": {}}))
    elif damage == "missing tensor":
        meta.write_text(json.dumps({"format": "rlhfkit-state/1", "state": {"__tensor__": "99"}}))
    else:
        tensors.write_bytes(tensors.read_bytes()[:20])
    with pytest.raises(RlhfkitError, match="trainer.json: not a training state"):
        load_state(tmp_path, "trainer")


class _RunsCode:
    """What an attacker plants: unpickling this calls `Path.touch(marker)`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pretrain(corpus, tok, out, steps):
    return ["pretrain", "--data", str(corpus), "--tokenizer", str(tok), "--out", str(out),
            "--max-steps", str(steps), "--save-every", "3", "--warmup-steps", "1", "--eval-every", str(steps),
            "--eval-tokens", "1024", "--sample-tokens", "4", "--preset", "micro", "--seq-len", "32",
            "--batch-size", "4", "--micro-batch-size", "4"]  # fmt: skip


@pytest.fixture
def interrupted_run(corpus_file, tokenizer_dir, tmp_path) -> Path:
    """A pretraining run with a checkpoint at step 3 of 6 and no final model, as after a kill -9."""
    out = tmp_path / "run"
    assert main(_pretrain(corpus_file, tokenizer_dir, out, 3)) == 0
    (out / "rlhfkit.json").unlink()
    return out


def test_a_planted_pickle_in_the_checkpoint_never_runs(interrupted_run, corpus_file, tokenizer_dir, tmp_path):
    ckpt = interrupted_run / "checkpoint"
    marker = tmp_path / "pwned"
    for name in ("trainer.json", "trainer.safetensors"):
        (ckpt / name).unlink(missing_ok=True)
    (ckpt / "trainer.pt").write_bytes(pickle.dumps({"optimizer": _RunsCode(marker), "rng": None}))
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *_pretrain(corpus_file, tokenizer_dir, interrupted_run, 6)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not marker.exists(), "the planted pickle ran"
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "trainer.pt: not a checkpoint rlhfkit can read safely" in err and "Traceback" not in err, err
    assert not (interrupted_run / "rlhfkit.json").exists()


def test_a_checkpoint_from_before_the_safe_format_still_resumes(interrupted_run, corpus_file, tokenizer_dir):
    """Runs interrupted under an older rlhfkit (optimizer and RNG in `trainer.pt`) resume through torch's
    restricted unpickler, which builds tensors, containers and the numpy RNG state and nothing else."""
    ckpt = interrupted_run / "checkpoint"
    torch.save(load_state(ckpt, "trainer"), ckpt / "trainer.pt")
    for name in ("trainer.json", "trainer.safetensors"):
        (ckpt / name).unlink(missing_ok=True)
    assert main(_pretrain(corpus_file, tokenizer_dir, interrupted_run, 6)) == 0
    steps = [
        json.loads(line)["step"] for line in (interrupted_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps[-1] == 6 and (interrupted_run / "model.safetensors").exists()


def test_a_save_that_dies_midway_leaves_no_half_model(policy_dir, tmp_path, monkeypatch):
    """`save_pretrained` writes config.json before the weights; a save that dies between them must not leave
    a folder that loaders take for a model, and a folder in that state is named as an incomplete save."""
    from transformers import PreTrainedModel

    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

    model, tok = load_causal_lm(policy_dir), load_tokenizer(policy_dir)

    def dies_after_the_config(self, folder, **kwargs):
        self.config.save_pretrained(folder)
        raise KeyboardInterrupt  # as a kill between the config and the weights

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", dies_after_the_config)
    with pytest.raises(KeyboardInterrupt):
        save_hf_checkpoint(model, tok, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()
    monkeypatch.undo()

    save_hf_checkpoint(model, tok, tmp_path / "out")
    assert torch.equal(load_causal_lm(tmp_path / "out").lm_head.weight, model.lm_head.weight)
    assert not (tmp_path / "out" / ".saving").exists()

    (tmp_path / "out" / "model.safetensors").unlink()  # what the old save order left behind
    with pytest.raises(RlhfkitError, match="incomplete save"):
        load_causal_lm(tmp_path / "out")
