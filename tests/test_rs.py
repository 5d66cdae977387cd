"""Rejection-sampling fine-tuning on micro models: the reward model's favourite of each prompt's samples wins,
the policy moves toward the winners, every round resumes, and bad input gets one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.data.jsonl import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _argv(policy_dir: Path, rm_dir: Path, prompts_file: Path, out: Path, rounds: int) -> list[str]:
    return ["rs", "--policy", str(policy_dir), "--reward", str(rm_dir), "--prompts", str(prompts_file),
            "--out", str(out), "--n", "4", "--rounds", str(rounds), "--prompts-per-round", "12",
            "--max-new-tokens", "8", "--keep-unfinished", "--sft-epochs", "4", "--sft-batch-size", "4",
            "--lr", "1e-2", "--warmup-steps", "1", "--device", "cpu"]  # fmt: skip


def _winner_nll(model_dir: Path, winners: Path) -> float:
    """Mean assistant-token loss of the winners' chats under a model."""
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer
    from rlhfkit.train.chat_tokens import tokenize_chats
    from rlhfkit.train.loop import lm_loss
    from rlhfkit.train.sft import collate

    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir).eval()
    chats = [rec for _, rec in read_jsonl(winners)]
    batch = collate(tokenize_chats(tok, chats, 64, str(winners)), tok.pad_token_id, "cpu")
    with torch.no_grad():
        loss_sum, count, _ = lm_loss(model, batch)
    return float(loss_sum / count)


def test_rejection_sampling_keeps_the_rm_favourite_and_learns_it(policy_dir, rm_dir, prompts_file, tmp_path):
    out = tmp_path / "rs"
    assert main(_argv(policy_dir, rm_dir, prompts_file, out, rounds=2)) == 0
    round0 = out / "rounds" / "0"
    samples = [rec for _, rec in read_jsonl(round0 / "samples.jsonl")]
    winners = {rec["id"]: rec for _, rec in read_jsonl(round0 / "winners.jsonl")}
    assert len(samples) == 12 and all(len(s["responses"]) == 4 for s in samples)
    for s in samples:
        best = max(range(4), key=lambda j: s["scores"][j])
        if s["responses"][best].strip():
            won = winners[f"{s['id']}-rs"]
            assert won["messages"][-1]["content"] == s["responses"][best]
            assert won["reward"] == pytest.approx(max(s["scores"]))
    # fine-tuning on the winners made them more likely than under the starting policy
    assert _winner_nll(round0 / "policy", round0 / "winners.jsonl") < _winner_nll(
        policy_dir, round0 / "winners.jsonl"
    )
    # the second round sampled from round 0's policy and wrote the final policy into `out`
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["stage"] == "rs" and len(manifest["rounds"]) == 2
    assert (out / "rounds" / "1" / "winners.jsonl").exists() and (out / "model.safetensors").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out))


def test_a_finished_round_is_not_sampled_again(policy_dir, rm_dir, prompts_file, tmp_path):
    out = tmp_path / "rs"
    assert main(_argv(policy_dir, rm_dir, prompts_file, out, rounds=1)) == 0
    winners = out / "rounds" / "0" / "winners.jsonl"
    stamp, weights = winners.stat().st_mtime_ns, (out / "model.safetensors").read_bytes()
    assert main(_argv(policy_dir, rm_dir, prompts_file, out, rounds=1)) == 0
    assert winners.stat().st_mtime_ns == stamp
    assert (out / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "rlhfkit.json").read_text())["metrics"]["mean_winner_score"] is not None


def test_bad_input_is_one_clear_error(policy_dir, rm_dir, prompts_file, tmp_path, capsys):
    argv = _argv(policy_dir, rm_dir, prompts_file, tmp_path / "x", rounds=1)
    assert main([*argv, "--n", "1"]) == 1
    assert "at least 2 responses" in capsys.readouterr().err
    assert main(["rs", "--policy", str(policy_dir), "--prompts", str(prompts_file)]) == 1
    assert "--reward is required" in capsys.readouterr().err
    assert main([*argv, "--generation-quantize", "int4"]) == 1
    assert "--generation-quantize: expected one of none, int8, got 'int4'" in capsys.readouterr().err


def test_the_dpo_objective_trains_on_each_prompts_best_versus_worst_sample(
    policy_dir, rm_dir, prompts_file, tmp_path
):
    out = tmp_path / "rs_dpo"
    argv = _argv(policy_dir, rm_dir, prompts_file, out, rounds=1)
    assert main([*argv, "--objective", "dpo", "--dpo-beta", "0.5"]) == 0
    samples = {rec["id"]: rec for _, rec in read_jsonl(out / "rounds" / "0" / "samples.jsonl")}
    pairs = [rec for _, rec in read_jsonl(out / "rounds" / "0" / "pairs.jsonl")]
    assert pairs
    for pair in pairs:
        sample = samples[pair["id"].removesuffix("-pair")]
        score = dict(zip(sample["responses"], sample["scores"]))
        assert score[pair["chosen"][0]["content"]] == max(s for r, s in score.items() if r.strip())
        assert score[pair["chosen"][0]["content"]] > score[pair["rejected"][0]["content"]]
    dpo = json.loads((out / "rlhfkit.json").read_text())
    assert dpo["stage"] == "rs" and dpo["config"]["objective"] == "dpo"
    assert (out / "ref_logprobs.safetensors").exists()  # the DPO stage trained the final policy


def test_int8_sampling_on_request(policy_dir, rm_dir, prompts_file, tmp_path, monkeypatch):
    import rlhfkit.generation as generation

    asked, real = [], generation.generate_chat

    def spy(*args, **kwargs):
        asked.append((len(args[2]), kwargs.get("quantize")))
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_chat", spy)
    argv = _argv(policy_dir, rm_dir, prompts_file, tmp_path / "rs", rounds=1)
    assert main([*argv, "--generation-quantize", "int8"]) == 0
    assert asked[0] == (12 * 4, "int8")  # the round's samples; fine-tuning then shows a few, in fp32
    assert (tmp_path / "rs" / "rounds" / "0" / "winners.jsonl").exists()
