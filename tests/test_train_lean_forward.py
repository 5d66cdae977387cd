"""The lean training forward (`train.lean_forward`) against the Hugging Face forward it replaces: the same
hidden states at the chosen positions and the same gradients for every parameter, on Llama (GQA, tied
embeddings) and Qwen2 (q/k/v biases) bodies; other models and wrapped layers keep the HF forward."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rlhfkit.ppo.rollout import pad_episodes, response_states, state_hidden, token_logprobs
from rlhfkit.train.lean_forward import lean_hidden_at, lean_supported

SIZES = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=64,
)  # fmt: skip


def llama(**kw):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SIZES, num_key_value_heads=2, tie_word_embeddings=True, **kw))


def qwen2():
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**SIZES, num_key_value_heads=2, tie_word_embeddings=False))


def _randomize(model):
    """Larger-than-default weights and non-trivial norms/biases, so differences would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() >= 2 else 0.5) + (1.0 if "norm" in name else 0.0))
    return model


def episodes():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 97, (n,), generator=g).tolist() for n in (5, 1, 9, 3)]
    responses = [torch.randint(2, 97, (n,), generator=g).tolist() for n in (4, 7, 2, 6)]
    seqs, plens, rids, mask = pad_episodes(prompts, responses, 0, "cpu")
    return {"sequences": seqs, "prompt_lens": plens, "response_ids": rids, "mask": mask}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "build", [llama, qwen2, lambda: llama(pad_token_id=7)], ids=["llama", "qwen2", "pad-id"]
)
def test_lean_hidden_states_and_gradients_equal_the_hf_forward(build):
    model = _randomize(build()).train()
    body = model.model
    assert lean_supported(body)
    batch = episodes()
    batch["sequences"][:, 0] = (
        7  # a real token equal to the pad id (as an eos that is also the pad): no embedding grad
    )
    select = response_states(batch)
    weights = torch.randn(int(select.sum()), SIZES["hidden_size"])

    reference = body(input_ids=batch["sequences"], use_cache=False).last_hidden_state[select]
    (reference * weights).sum().backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    lean = lean_hidden_at(body, batch["sequences"], select)
    (lean * weights).sum().backward()
    got = _grads(model)
    torch.testing.assert_close(lean, reference, atol=1e-5, rtol=1e-5)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-4, msg=name)


def test_selecting_every_position_of_unpadded_rows_equals_the_full_forward():
    model = _randomize(llama()).train()  # pretraining's case: no padding, nothing trimmed
    ids = torch.randint(2, 97, (3, 11))
    weights = torch.randn(3, 11, SIZES["hidden_size"])
    full = model.model(input_ids=ids).last_hidden_state
    (full * weights).sum().backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    lean = lean_hidden_at(model.model, ids, torch.ones_like(ids, dtype=torch.bool))
    (lean * weights.reshape(-1, SIZES["hidden_size"])).sum().backward()
    torch.testing.assert_close(lean, full.reshape(-1, full.size(-1)), atol=1e-5, rtol=1e-5)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, expected[name], atol=1e-4, rtol=1e-4, msg=name)


def test_ppo_logprobs_and_critic_states_are_the_hf_ones():
    policy = _randomize(llama()).eval()
    batch = episodes()
    with torch.no_grad():
        logits = policy(input_ids=batch["sequences"]).logits.float().log_softmax(-1)
        lean_logp, _, hidden = token_logprobs(policy, batch)
    mask = batch["mask"].bool()
    for i in range(mask.size(0)):
        p = int(batch["prompt_lens"][i])
        for j in range(int(mask[i].sum())):
            want = logits[i, p - 1 + j, batch["response_ids"][i, j]]
            assert float(lean_logp[i, j]) == pytest.approx(float(want), abs=1e-5)
    assert (hidden[~mask] == 0).all()  # states past a response are not computed

    torch.manual_seed(0)
    critic = _randomize(LlamaForSequenceClassification(LlamaConfig(**SIZES, num_labels=1))).eval()
    with torch.no_grad():
        full = critic.model(input_ids=batch["sequences"]).last_hidden_state
        states = state_hidden(critic.model, batch)
    for i in range(mask.size(0)):
        p, n = int(batch["prompt_lens"][i]), int(mask[i].sum())
        torch.testing.assert_close(states[i, :n], full[i, p - 1 : p - 1 + n], atol=1e-5, rtol=1e-5)


def test_what_the_lean_forward_does_not_reproduce_keeps_the_hf_forward():
    from peft import LoraConfig, get_peft_model

    from rlhfkit.lora import enable_gradient_checkpointing

    assert not lean_supported(GPTNeoXForCausalLM(GPTNeoXConfig(**SIZES)).gpt_neox)
    checkpointed = llama()
    enable_gradient_checkpointing(checkpointed)
    assert not lean_supported(checkpointed.model)
    assert not lean_supported(llama().to(torch.bfloat16).model)
    dora = get_peft_model(llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], use_dora=True))
    assert not lean_supported(dora.get_base_model().model)  # plain LoRA is reproduced: test_lora_path.py
    model = llama()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lean_supported(model.model)
    assert lean_supported(model.model)


def test_lm_loss_through_the_lean_forward_equals_the_hf_loss_and_gradients(monkeypatch):
    import rlhfkit.train.logits as logits_module
    from rlhfkit.train.loop import lm_loss

    model = _randomize(llama()).train()
    ids = torch.randint(2, 97, (3, 12))
    ids[1, 8:] = 0  # right padding
    labels = ids[:, 1:].clone()
    labels[:, :4] = -100  # SFT: prompt tokens have no label
    labels[1, 7:] = -100
    batch = {"input_ids": ids[:, :-1], "labels": labels}
    results = []
    for lean in (False, True):
        if not lean:
            monkeypatch.setattr(logits_module, "lean_supported", lambda body: False)
        else:
            monkeypatch.undo()
        loss, count, _ = lm_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), _grads(model)))
        model.zero_grad(set_to_none=True)
    (hf_loss, hf_grads), (lean_loss, lean_grads) = results
    torch.testing.assert_close(lean_loss, hf_loss, atol=1e-4, rtol=1e-5)
    for name in hf_grads:
        torch.testing.assert_close(lean_grads[name], hf_grads[name], atol=1e-4, rtol=1e-4, msg=name)


def test_reward_scores_are_read_where_transformers_pools_them():
    from rlhfkit.reward.model import _lean_classifier, forward_scores, pad_batch

    torch.manual_seed(0)
    model = _randomize(LlamaForSequenceClassification(LlamaConfig(**SIZES, num_labels=1, pad_token_id=0)))
    # The second row ends with a real token equal to the pad id: transformers reads the score before it.
    batch = pad_batch([[5, 6, 7, 8], [9, 10, 0], [11]], 0, "cpu")
    assert _lean_classifier(model, batch["attention_mask"])
    lean = forward_scores(model, batch)
    lean.sum().backward()
    lean_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    hf = model(**batch).logits[:, 0]
    hf.sum().backward()
    torch.testing.assert_close(lean, hf, atol=1e-5, rtol=1e-5)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(lean_grads[name], grad, atol=1e-4, rtol=1e-4, msg=name)
    left_padded = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].flip(-1)}
    assert not _lean_classifier(model, left_padded["attention_mask"])


def test_the_onednn_training_linear_equals_f_linear_with_its_gradients():
    from rlhfkit.train.fast_linear import _OneDNNLinear, onednn_works

    def linear(x, w, b):  # the oneDNN path itself, whichever library `fast_linear.linear` prefers on this CPU
        return _OneDNNLinear.apply(x.reshape(-1, x.size(-1)), w, b).view(*x.shape[:-1], w.size(0))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 16, generator=g, requires_grad=True)
    w = torch.randn(24, 16, generator=g, requires_grad=True)
    b = torch.randn(24, generator=g, requires_grad=True)
    out = torch.randn(2, 7, 24, generator=g)
    grads = []
    for fn in (torch.nn.functional.linear, linear):
        y = fn(x, w, b)
        (y * out).sum().backward()
        grads.append((y.detach(), x.grad, w.grad, b.grad))
        x.grad = w.grad = b.grad = None
    for want, got in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert onednn_works()  # the CPU build has oneDNN: the fast path is what was compared


def test_the_training_linear_picks_mkl_on_intel_and_onednn_elsewhere(monkeypatch):
    from rlhfkit.train import fast_linear

    x, w = torch.randn(3, 8), torch.randn(5, 8)
    for vendor, onednn in (("GenuineIntel", False), ("AuthenticAMD", True)):
        monkeypatch.setattr(fast_linear, "_USABLE", {"cpu": True})  # oneDNN works; the vendor decides
        monkeypatch.setattr(fast_linear, "cpu_vendor", lambda v=vendor: v)
        assert fast_linear.usable() is onednn
        calls = []
        monkeypatch.setattr(
            fast_linear, "mm_t", lambda a, b, bias=None, seen=calls: seen.append(1) or a @ b.t()
        )
        torch.testing.assert_close(fast_linear.linear(x, w), x @ w.t())
        assert bool(calls) is onednn
        monkeypatch.undo()
    bf16 = fast_linear.linear(x.to(torch.bfloat16), w.to(torch.bfloat16))
    assert bf16.dtype == torch.bfloat16  # F.linear
