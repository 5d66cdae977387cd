"""`--reward A,B`: an ensemble of reward models, rewarded by mean - k * std of the members' normalized scores."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.ppo.rm_reward import ensemble_reward_fn, rm_reward_fn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [[{"role": "user", "content": f"tell me about the {w}"}] for w in ("cat", "dog", "sun", "moon")]
TEXTS = ["the red cat", "a big dog and a small bird", "sun", "the blue river and the stone"]


@pytest.fixture(scope="module")
def second_rm(rm_dir, tmp_path_factory):
    """Another reward model on the same backbone: a different head, another recorded score std."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("rm2") / "rm"
    shutil.copytree(rm_dir, out)
    rm = AutoModelForSequenceClassification.from_pretrained(str(out))
    torch.manual_seed(7)
    torch.nn.init.normal_(rm.score.weight, std=0.5)
    rm.save_pretrained(out)
    (out / "rlhfkit.json").write_text(json.dumps({"stage": "reward", "calibration": {"std": 0.25}}))
    return out


def _scores(spec, penalty):
    fn, stats = ensemble_reward_fn(spec, penalty, "cpu", None, 8)
    return torch.tensor(fn(PROMPTS, TEXTS, [[] for _ in TEXTS])), stats


def test_the_ensemble_reward_is_the_mean_of_normalized_scores_minus_k_std(rm_dir, second_rm):
    one, _ = rm_reward_fn(str(rm_dir), "cpu", None, 8)
    two, _ = rm_reward_fn(str(second_rm), "cpu", None, 8)
    a = torch.tensor(one(PROMPTS, TEXTS, [])) / 0.5  # each member divided by its own recorded std
    b = torch.tensor(two(PROMPTS, TEXTS, [])) / 0.25
    assert not torch.allclose(a, b)  # the members disagree
    mean, _ = _scores(f"{rm_dir},{second_rm}", 0.0)
    penalized, stats = _scores(f"{rm_dir},{second_rm}", 1.0)
    assert torch.allclose(mean, (a + b) / 2, atol=1e-5)
    assert torch.allclose(penalized, (a + b) / 2 - (a - b).abs() / 2, atol=1e-5)
    assert stats == {"score_std": 1.0, "ensemble": 2, "ensemble_penalty": 1.0}
    # Members that agree pay no penalty; one folder is a plain reward model, its own std left to the trainer.
    same, _ = _scores(f"{rm_dir},{rm_dir}", 1.0)
    assert torch.allclose(same, a, atol=1e-5)
    single, single_stats = _scores(str(rm_dir), 1.0)
    assert torch.allclose(single, a * 0.5, atol=1e-5) and single_stats == {"score_std": 0.5}


def test_ppo_trains_against_an_ensemble(policy_dir, prompts_file, rm_dir, second_rm, tmp_path):
    out = tmp_path / "ppo"
    argv = ["ppo", "--policy", str(policy_dir), "--reward", f"{rm_dir},{second_rm}", "--ensemble-penalty", "0.5",
            "--prompts", str(prompts_file), "--out", str(out), "--steps", "2", "--batch-size", "8",
            "--minibatch-size", "4", "--epochs", "1", "--max-new-tokens", "8", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["reward_normalization"]["std"] == 1.0  # the members' scores arrive normalized
    assert (out / "value" / "config.json").exists()  # the critic starts from the first member
