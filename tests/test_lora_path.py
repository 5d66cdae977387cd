"""LoRA through the lean training forward (`train.lora_path`, `train.lean_forward`) against peft's own
forward: the same logits and the same LoRA-parameter gradients on Llama- and Qwen2-shaped models (fp32,
tight), adapters disabled giving the base, variants it does not reproduce keeping peft's forward, and the
bf16 frozen base (`train.precision`) close to fp32 where the CPU multiplies bf16 natively."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import rlhfkit.train.logits as logits_module
from rlhfkit.lora import LoraOptions, apply_lora
from rlhfkit.train import lean_forward
from rlhfkit.train.fast_linear import bf16_usable, frozen_lora, linear
from rlhfkit.train.lean_forward import _matmul_attention, lean_supported
from rlhfkit.train.loop import lm_loss

SIZES = {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2}
SIZES.update(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def llama(dtype=torch.float32):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SIZES, tie_word_embeddings=True)).to(dtype)


def qwen2(dtype=torch.float32):
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=False)).to(dtype)


def lora(base, head=None, **options):
    """rlhfkit's LoRA (every block linear layer; `head`: a reward model's, trained whole) with random A and
    B, so every adapter changes the output."""
    model = apply_lora(base, LoraOptions(lora_r=4, **options), head=head)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def batch():
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(2, 97, (3, 12), generator=gen)
    ids[1, 8:] = 0  # right padding
    labels = ids[:, 1:].clone()
    labels[:, :4] = -100  # SFT: prompt tokens have no label
    labels[1, 7:] = -100
    return {"input_ids": ids[:, :-1], "labels": labels}


def loss_and_grads(model, lean: bool, monkeypatch):
    """lm_loss and the LoRA gradients, through the lean forward or (lean off) peft's own forward."""
    with monkeypatch.context() as patch:
        if not lean:
            patch.setattr(logits_module, "lean_supported", lambda body: False)
        loss, _, _ = lm_loss(model, batch())
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("attention", ["matmul", "sdpa"])  # sdpa: past the matmul attention's size limit
@pytest.mark.parametrize("build", [llama, qwen2], ids=["llama", "qwen2"])
def test_lora_logits_and_gradients_equal_peft(build, attention, monkeypatch):
    if attention == "sdpa":
        monkeypatch.setattr(lean_forward, "_MATMUL_ATTENTION_MAX", 0)
    model = lora(build()).train()
    assert lean_supported(model.get_base_model().model)
    ids, select = batch()["input_ids"], batch()["labels"] != -100
    lean_logits, _ = logits_module.logits_at(model, ids, select)
    torch.testing.assert_close(lean_logits, model(input_ids=ids).logits[select], atol=1e-5, rtol=1e-5)

    peft_loss, peft_grads = loss_and_grads(model, False, monkeypatch)
    lean_loss, lean_grads = loss_and_grads(model, True, monkeypatch)
    torch.testing.assert_close(lean_loss, peft_loss, atol=1e-4, rtol=1e-6)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert lean_grads.keys() == peft_grads.keys() == trained  # the LoRA A and B only, all of them
    for name, grad in peft_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_disabled_adapters_give_the_base_model():
    model = lora(llama()).eval()
    ids, select = batch()["input_ids"], batch()["labels"] != -100
    with torch.no_grad():
        with model.disable_adapter():
            disabled, _ = logits_module.logits_at(model, ids, select)
        base = llama().eval()(input_ids=ids).logits[select]
        adapted, _ = logits_module.logits_at(model, ids, select)
    torch.testing.assert_close(disabled, base, atol=1e-5, rtol=1e-5)
    assert (adapted - base).abs().max() > 1e-2  # the adapters do change the output


def test_a_frozen_weight_changed_in_place_is_read_anew(monkeypatch):
    model = lora(llama()).train()
    ids, select = batch()["input_ids"], batch()["labels"] != -100
    with torch.inference_mode():
        logits_module.logits_at(model, ids, select)  # the frozen q/k/v stacks are built here
    with torch.no_grad():
        model.get_base_model().model.layers[0].self_attn.k_proj.base_layer.weight.mul_(3.0)
    peft_loss, peft_grads = loss_and_grads(model, False, monkeypatch)
    lean_loss, lean_grads = loss_and_grads(model, True, monkeypatch)  # and saved for this backward
    torch.testing.assert_close(lean_loss, peft_loss, atol=1e-4, rtol=1e-6)


def test_what_the_side_path_does_not_reproduce_keeps_peft_forward():
    from peft import LoraConfig, get_peft_model

    dora = get_peft_model(llama(), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    assert not lean_supported(dora.get_base_model().model)
    dropout = lora(llama(), lora_dropout=0.1)
    assert not lean_supported(dropout.train().get_base_model().model)
    assert lean_supported(dropout.eval().get_base_model().model)  # dropout is the identity in eval mode
    embedding = get_peft_model(llama(), LoraConfig(r=2, target_modules=["embed_tokens"]))
    assert not lean_supported(embedding.get_base_model().model)


needs_bf16 = pytest.mark.skipif(not bf16_usable(), reason="this CPU has no native bf16 matmuls")


@needs_bf16
def test_a_frozen_bf16_linear_returns_fp32_and_only_the_input_gradient():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 64, generator=gen, requires_grad=True)
    w, b = torch.randn(24, 64, generator=gen), torch.randn(24, generator=gen)
    out = linear(x, w.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32
    want = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(out, want, atol=0.1, rtol=2e-2)
    grad = torch.randn(7, 24, generator=gen)
    (got_dx,) = torch.autograd.grad(out, x, grad)
    (want_dx,) = torch.autograd.grad(want, x, grad)
    assert got_dx.dtype == torch.float32
    torch.testing.assert_close(got_dx, want_dx, atol=0.1, rtol=2e-2)


@needs_bf16
def test_a_bf16_lora_projection_keeps_a_small_adapter_and_gives_fp32_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 64, generator=gen, requires_grad=True)
    w = torch.randn(48, 64, generator=gen).bfloat16()
    down = (torch.randn(6, 64, generator=gen) * 0.1).requires_grad_()
    up = (torch.randn(48, 6, generator=gen) * 1e-4).requires_grad_()  # B early in training: near zero
    out = frozen_lora(x, w, None, down, up)
    assert out.dtype == torch.float32
    # The adapter's share (~1e-4) is far below bf16's resolution of the base output (~1e-2): it must survive.
    side = out - frozen_lora(x, w, None, down, torch.zeros_like(up))
    torch.testing.assert_close(side, (x @ down.T) @ up.T, atol=2e-6, rtol=2e-2)
    grad = torch.randn(9, 48, generator=gen)
    got = torch.autograd.grad(out, (x, down, up), grad)
    want = torch.autograd.grad(x @ w.float().T + (x @ down.T) @ up.T, (x, down, up), grad)
    for g, ref in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0) > 0.999


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16)])
def test_matmul_attention_is_causal_grouped_query_attention(dtype):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 7, 16, generator=gen, requires_grad=True)
    k, v = (torch.randn(2, 2, 7, 16, generator=gen, requires_grad=True) for _ in range(2))
    got = _matmul_attention(q, k, v, 0.25, dtype)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=0.25, enable_gqa=True
    )
    assert got.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
    grad = torch.randn(got.shape, generator=gen)
    for g, ref in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(want, (q, k, v), grad)):
        assert torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0) > 0.999


@needs_bf16
def test_a_bf16_frozen_base_stays_close_to_fp32(monkeypatch):
    fp32 = lora(llama()).train()
    bf16 = lora(llama(torch.bfloat16)).train()
    assert lean_supported(bf16.get_base_model().model)
    assert all(p.dtype == torch.float32 for p in bf16.parameters() if p.requires_grad)
    want_loss, want_grads = loss_and_grads(fp32, True, monkeypatch)
    got_loss, got_grads = loss_and_grads(bf16, True, monkeypatch)
    # The bf16 weights themselves differ from fp32 by ~0.4%: the loss moves by about that much, not more.
    assert abs(float(got_loss) / float(want_loss) - 1) < 1e-2
    for name, grad in want_grads.items():
        cosine = torch.nn.functional.cosine_similarity(got_grads[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, name


def test_auto_dtype_puts_a_lora_base_in_bf16_only_on_a_native_bf16_cpu(monkeypatch, capsys):
    import rlhfkit.train.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: "avx512_bf16")
    monkeypatch.setattr(precision, "_SAID", set())
    auto = precision.Precision.of(cpu, "auto")
    assert auto.trainable_load_dtype(lora=True) == torch.bfloat16
    assert auto.trainable_load_dtype(lora=False) == torch.float32  # full training keeps fp32 weights
    assert auto.dtype == torch.float32  # frozen models and autocast unchanged
    assert "avx512_bf16" in capsys.readouterr().out
    assert precision.Precision.of(cpu, "float32").trainable_load_dtype(lora=True) == torch.float32
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: None)
    assert precision.Precision.of(cpu, "auto").trainable_load_dtype(lora=True) == torch.float32
    assert "no amx_bf16/avx512_bf16" in capsys.readouterr().out


def test_a_lora_reward_model_scores_and_gradients_equal_peft(monkeypatch):
    from transformers import LlamaForSequenceClassification

    import rlhfkit.reward.model as reward_model

    torch.manual_seed(0)
    classifier = LlamaForSequenceClassification(LlamaConfig(**SIZES, num_labels=1, pad_token_id=0))
    model = lora(classifier, head="score")
    batch = reward_model.pad_batch([[5, 6, 7, 8], [9, 10, 0], [11]], 0, "cpu")
    assert reward_model._lean_classifier(model, batch["attention_mask"])
    results = []
    for lean in (True, False):
        with monkeypatch.context() as patch:
            if not lean:
                patch.setattr(reward_model, "_lean_classifier", lambda m, mask: False)
            scores = reward_model.forward_scores(model, batch)
        (scores * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        results.append(
            (scores.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        )
        model.zero_grad(set_to_none=True)
    (lean_scores, lean_grads), (peft_scores, peft_grads) = results
    torch.testing.assert_close(lean_scores, peft_scores, atol=1e-5, rtol=1e-5)
    assert lean_grads.keys() == peft_grads.keys() and any("score" in n for n in peft_grads)
    for name, grad in peft_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@needs_bf16
def test_frozen_bf16_models_score_and_give_logprobs_through_the_lean_forward():
    from transformers import LlamaForSequenceClassification

    import rlhfkit.reward.model as reward_model
    from rlhfkit.ppo.rollout import pad_episodes, token_logprobs

    torch.manual_seed(0)
    classifier = LlamaForSequenceClassification(LlamaConfig(**SIZES, num_labels=1, pad_token_id=0)).eval()
    batch = reward_model.pad_batch([[5, 6, 7, 8], [9, 10, 0], [11]], 0, "cpu")
    fp32 = reward_model.forward_scores(classifier.requires_grad_(False), batch)
    frozen = classifier.to(torch.bfloat16)
    assert reward_model._lean_classifier(frozen, batch["attention_mask"])
    torch.testing.assert_close(reward_model.forward_scores(frozen, batch).float(), fp32, atol=0.05, rtol=0.05)

    policy = llama().eval().requires_grad_(False)
    seqs, plens, rids, mask = pad_episodes([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], 0, "cpu")
    episodes = {"sequences": seqs, "prompt_lens": plens, "response_ids": rids, "mask": mask}
    want, _, _ = token_logprobs(policy, episodes)
    assert lean_supported(policy.to(torch.bfloat16).model)
    got, _, _ = token_logprobs(policy, episodes)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)
