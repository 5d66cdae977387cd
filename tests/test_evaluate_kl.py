"""`evaluate`'s KL of each model to the first: exact against a plain forward, zero for the same model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhfkit.evaluate.kl import kl_to_first

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHATS = [
    [{"role": "user", "content": f"tell me about the {w}"}] for w in ("cat", "dog", "sun", "moon", "tree")
]


def _micro(policy_dir, tmp_path_factory, seed: int) -> Path:
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(policy_dir)
    out = tmp_path_factory.mktemp("other") / "model"
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=seed), tok, out)
    return out


@pytest.fixture(scope="module")
def other_model(policy_dir, tmp_path_factory) -> Path:
    return _micro(policy_dir, tmp_path_factory, 7)


@pytest.fixture(scope="module")
def third_model(policy_dir, tmp_path_factory) -> Path:
    return _micro(policy_dir, tmp_path_factory, 8)


def _forward_logprobs(folder: Path, prompt: list[int], response: list[int], temperature: float) -> float:
    """Summed log-probs of `response` after `prompt`: a full forward, every logit, no shortcut."""
    from rlhfkit.models import load_causal_lm

    model = load_causal_lm(folder).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0].float() / temperature
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
    return float(logp.gather(1, torch.tensor(response)[:, None]).sum())


def _sample(folder: Path, temperature: float) -> dict:
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.generation.loading import load_for_generation
    from rlhfkit.generation.turns import render_chat

    model, tok = load_for_generation(str(folder), device="cpu", dtype="float32")
    done = generate_chat(model, tok, CHATS, SamplingParams(max_new_tokens=6, temperature=temperature, seed=1))
    return {
        "prompt_ids": [tok(render_chat(tok, c), add_special_tokens=False)["input_ids"] for c in CHATS],
        "token_ids": [list(c.token_ids) for c in done],
        "logprobs": [list(c.logprobs) for c in done],
    }


def _cfg(models: dict[str, Path], temperature: float = 0.8):
    return SimpleNamespace(
        models={k: str(v) for k, v in models.items()},
        temperature=temperature,
        device="cpu",
        dtype="float32",
        chat_template=None,
        batch_size=2,
    )


def test_kl_is_the_mean_log_ratio_of_each_models_own_samples(policy_dir, other_model):
    generated = {"original": _sample(policy_dir, 0.8), "tuned": _sample(other_model, 0.8)}
    result = kl_to_first(generated, _cfg({"original": policy_dir, "tuned": other_model}))
    tuned = generated["tuned"]
    expected = [
        _forward_logprobs(other_model, p, r, 0.8) - _forward_logprobs(policy_dir, p, r, 0.8)
        for p, r in zip(tuned["prompt_ids"], tuned["token_ids"])
    ]
    row = result["models"]["tuned"]
    assert row["kl"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert row["n"] == len(CHATS) and row["kl_stderr"] > 0
    assert row["kl_per_token"] == pytest.approx(sum(expected) / sum(map(len, tuned["token_ids"])), abs=1e-4)
    assert result["reference"] == "original" and result["models"]["original"]["kl"] == 0.0


def test_several_models_answers_to_one_prompt_are_scored_together(
    policy_dir, other_model, third_model, monkeypatch
):
    from rlhfkit.evaluate import kl

    def one_row_each(*args):
        raise AssertionError("every chunk holds two answers to one prompt: they share its computation")

    monkeypatch.setattr(kl, "_row_logprobs", one_row_each)
    models = {"original": policy_dir, "tuned": other_model, "third": third_model}
    generated = {name: _sample(folder, 0.8) for name, folder in models.items()}
    result = kl_to_first(generated, _cfg(models))
    for name in ("tuned", "third"):
        g = generated[name]
        expected = [
            _forward_logprobs(models[name], p, r, 0.8) - _forward_logprobs(policy_dir, p, r, 0.8)
            for p, r in zip(g["prompt_ids"], g["token_ids"])
        ]
        assert result["models"][name]["kl"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)


def test_a_model_has_no_kl_to_itself(policy_dir):
    generated = {"a": _sample(policy_dir, 1.3), "b": _sample(policy_dir, 1.3)}
    assert (
        abs(kl_to_first(generated, _cfg({"a": policy_dir, "b": policy_dir}, 1.3))["models"]["b"]["kl"]) < 1e-4
    )


def test_kl_needs_sampling_and_one_tokenization(policy_dir):
    generated = {"a": _sample(policy_dir, 0.8), "b": _sample(policy_dir, 0.8)}
    greedy = kl_to_first(generated, _cfg({"a": policy_dir, "b": policy_dir}, 0.0))
    assert "greedy" in greedy["models"]["b"]["unavailable"]
    generated["b"]["prompt_ids"] = [[1, *ids] for ids in generated["b"]["prompt_ids"]]
    other = kl_to_first(generated, _cfg({"a": policy_dir, "b": policy_dir}))
    assert "tokenize differently" in other["models"]["b"]["unavailable"]
