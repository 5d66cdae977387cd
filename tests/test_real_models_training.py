"""Training stages on tiny random checkpoints of four real architectures (Llama/SmolLM2 layout, Qwen2, Gemma-2
with soft-capping, GPT-NeoX), with LoRA on and off: exact log-probs, sft / reward / ppo runs, adapter outputs
that peft loads, PPO's reference as the adapter-disabled base, clear errors, generation_config kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arch_models import ARCHS, CHATML, build_tiny
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.lora import LoraOptions, apply_lora
from rlhfkit.models import load_causal_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LORA = LoraOptions(lora_r=4, lora_alpha=8)
WORDS = ["the", "cat", "sat", "on", "a", "mat", "near", "the", "river", "and", "the", "dog", "ran"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, corpus_file) -> dict[str, Path]:
    """One tiny checkpoint per architecture; GPT-NeoX has no chat template, so the test gives it one."""
    from rlhfkit.tokenizer import load_tokenizer

    out = {}
    for arch in ARCHS:
        path = build_tiny(arch, corpus_file, tmp_path_factory.mktemp(arch))
        if arch == "gpt_neox":
            tok = load_tokenizer(path)
            tok.chat_template = CHATML.replace("<|im_start|>", "").replace("<|im_end|>", "<|endoftext|>")
            tok.save_pretrained(path)
        out[arch] = path
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    user = [{"role": "user", "content": f"say {WORDS[i]} {WORDS[i + 1]}"} for i in range(8)]
    chats = [{"messages": [u, {"role": "assistant", "content": u["content"][4:]}]} for u in user]
    pairs = [{"prompt": [u], "chosen": [{"role": "assistant", "content": u["content"][4:]}],
              "rejected": [{"role": "assistant", "content": "no"}]} for u in user]  # fmt: skip
    paths = {"chats": root / "chats.jsonl", "pairs": root / "pairs.jsonl", "prompts": root / "prompts.jsonl"}
    write_jsonl(paths["chats"], chats)
    write_jsonl(paths["pairs"], pairs)
    write_jsonl(paths["prompts"], [{"messages": [u]} for u in user])
    return paths


def with_lora(model: torch.nn.Module) -> torch.nn.Module:
    """LoRA adapters with non-zero B, so the adapters change the outputs (fresh ones are exactly zero)."""
    model = apply_lora(model, LORA)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model


def episodes(vocab: int):
    from rlhfkit.ppo.rollout import pad_episodes

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (5, 9, 3)]
    responses = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (6, 2, 8)]
    seq, plens, rids, mask = pad_episodes(prompts, responses, 0, "cpu")
    return {"sequences": seq, "prompt_lens": plens, "response_ids": rids, "mask": mask}


def reference_logprobs(model, batch) -> torch.Tensor:
    """A plain full forward: log_softmax of the model's own logits, gathered at each response token."""
    logp = model(input_ids=batch["sequences"]).logits.float().log_softmax(-1)
    out = torch.zeros(batch["mask"].shape)
    for i in range(out.size(0)):
        p = int(batch["prompt_lens"][i])
        for j in range(int(batch["mask"][i].sum())):
            out[i, j] = logp[i, p + j - 1, batch["response_ids"][i, j]]
    return out


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_training_logprobs_equal_a_full_forward(models, arch, lora):
    from rlhfkit.ppo.rollout import token_logprobs
    from rlhfkit.train.loop import lm_loss

    model = load_causal_lm(models[arch]).eval()
    model = with_lora(model) if lora else model
    batch = episodes(model.config.vocab_size)
    with torch.no_grad():
        expected = reference_logprobs(model, batch)
        logp, _, hidden = token_logprobs(model, batch)
        assert torch.allclose(logp, expected, atol=1e-5), (logp - expected).abs().max()
        assert hidden.shape[:2] == batch["mask"].shape
        # SFT's loss: labels only on some positions (the fast path's case), equal to full cross-entropy
        labels = batch["sequences"][:, 1:].clone()
        labels[:, :4] = -100
        loss, count, _ = lm_loss(model, {"input_ids": batch["sequences"][:, :-1], "labels": labels})
        logits = model(input_ids=batch["sequences"][:, :-1]).logits.float()
        full = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        assert torch.allclose(loss, full, atol=1e-4) and int(count) == int((labels != -100).sum())
    if arch == "gemma2":  # the shortcut lm_head(hidden) is wrong here: soft-capping is part of the logits
        from rlhfkit.train.logits import causal_lm_of, plain_lm_head

        assert not plain_lm_head(model)
        lm = causal_lm_of(model)
        with torch.no_grad():
            raw = lm.lm_head(lm.model(input_ids=batch["sequences"]).last_hidden_state)
        assert not torch.allclose(raw, model(input_ids=batch["sequences"]).logits, atol=1e-3)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_dpo_sequence_logprobs_equal_a_full_forward(models, arch, lora):
    from rlhfkit.dpo.logprobs import sequence_logprobs

    model = load_causal_lm(models[arch]).eval()
    model = with_lora(model) if lora else model
    batch = episodes(model.config.vocab_size)
    labels = torch.full_like(batch["sequences"], -100)[:, 1:]
    for i in range(labels.size(0)):
        p, r = int(batch["prompt_lens"][i]), int(batch["mask"][i].sum())
        labels[i, p - 1 : p - 1 + r] = batch["response_ids"][i, :r]
    dpo_batch = {
        "input_ids": batch["sequences"][:, :-1],
        "attention_mask": torch.ones_like(labels),
        "labels": labels,
    }
    with torch.no_grad():
        got = sequence_logprobs(model, dpo_batch)
        expected = reference_logprobs(model, batch).sum(-1)
    assert torch.allclose(got, expected, atol=1e-4)


def test_ppo_reference_is_the_policy_with_adapters_disabled(models):
    from rlhfkit.ppo.rollout import Rollout, measure, token_logprobs

    base = load_causal_lm(models["qwen2"]).eval()
    policy = with_lora(load_causal_lm(models["qwen2"]))
    batch = episodes(base.config.vocab_size)
    rollout = Rollout(batch["sequences"], batch["prompt_lens"], batch["response_ids"], batch["mask"],
                      torch.ones(3, dtype=torch.bool), torch.zeros(3), ["", "", ""], [0, 1, 2])  # fmt: skip
    measure(rollout, policy, None, None, temperature=1.0)
    with torch.no_grad():
        base_logp = token_logprobs(base, batch)[0]
        policy_logp = token_logprobs(policy, batch)[0]
    assert torch.allclose(rollout.ref_logprobs, base_logp, atol=1e-5)
    assert torch.allclose(rollout.logprobs, policy_logp, atol=1e-5)
    assert not torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-3)  # the adapters do act


def sft(models, data, arch, out, **kw):
    from rlhfkit.train.loop import LoopConfig
    from rlhfkit.train.sft import SFTConfig, run

    loop = LoopConfig(max_steps=3, lr=1e-2, warmup_steps=1, eval_every=3, save_every=100, log_every=1)
    cfg = SFTConfig(model=str(models[arch]), data=str(data["chats"]), out=str(out), epochs=0, batch_size=4,
                    micro_batch_size=4, max_len=64, sample_every_eval=1, device="cpu", loop=loop, **kw)  # fmt: skip
    return run(cfg)


def reward(models, data, arch, out, **kw):
    from rlhfkit.reward.train import RewardConfig, RewardLoopConfig, run

    loop = RewardLoopConfig(max_steps=3, lr=1e-2, warmup_steps=1, eval_every=3, save_every=100)
    cfg = RewardConfig(model=str(models[arch]), data=str(data["pairs"]), eval_data=str(data["pairs"]),
                       out=str(out), epochs=0, batch_size=4, micro_batch_size=4, max_length=64, device="cpu",
                       loop=loop, **kw)  # fmt: skip
    return run(cfg)


def ppo(policy, rm, data, out, **kw):
    from rlhfkit.ppo import PPOConfig, run
    from rlhfkit.ppo.config import PPOLoopConfig

    cfg = PPOConfig(policy=str(policy), reward=str(rm), prompts=str(data["prompts"]), out=str(out), steps=2,
                    batch_size=4, minibatch_size=2, epochs=1, max_new_tokens=6, sample_every=0, device="cpu",
                    forward_batch_size=4, loop=PPOLoopConfig(lr=1e-3, warmup_steps=1, save_every=100), **kw)  # fmt: skip
    return run(cfg)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_sft_reward_and_ppo_run(models, data, tmp_path, arch, lora, monkeypatch):
    extra = {"lora": LORA} if lora else {}
    policy = sft(models, data, arch, tmp_path / "sft", **extra)
    rows = metrics(policy)
    assert rows[-1]["loss"] < rows[0]["loss"] and "val_loss" in rows[-1]
    rm = reward(models, data, arch, tmp_path / "rm", **extra)
    assert json.loads((rm / "eval.json").read_text())["accuracy"] >= 0.5

    from rlhfkit.cli import main

    assert main(["reward", "eval", "--model", str(rm), "--data", str(data["pairs"]), "--device", "cpu"]) == 0
    if lora:  # no second copy of the model for the reference: loading one is an error here
        import rlhfkit.ppo.trainer as trainer

        monkeypatch.setattr(trainer, "load_frozen_lm", lambda *a, **k: pytest.fail("a reference was loaded"))
    out = ppo(policy, rm, data, tmp_path / "ppo", **extra)
    rows = metrics(out)
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["kl"])) for r in rows)
    assert (out / ("adapter_config.json" if lora else "config.json")).exists()


def test_lora_outputs_are_peft_adapters_on_the_real_base(models, data, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from rlhfkit.reward.model import load_scorer, score_conversations

    out = sft(models, data, "llama", tmp_path / "sft", lora=LORA)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(models["llama"].resolve())
    assert not (out / "model.safetensors").exists()
    from safetensors.torch import load_file  # the resume checkpoint holds the adapters only, not the base

    assert all("lora_" in k for k in load_file(out / "checkpoint" / "model.safetensors"))
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    trained = load_causal_lm(models["llama"])
    ids = torch.tensor([[5, 9, 12, 7]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-4)
    # a LoRA reward model scores through load_scorer (adapters merged, head trained, offset applied)
    rm = reward(models, data, "llama", tmp_path / "rm", lora=LORA)
    assert json.loads((rm / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    scorer, tok, length = load_scorer(rm)
    items = [([{"role": "user", "content": "say cat sat"}], [{"role": "assistant", "content": c}]) for c in ("cat sat", "no")]  # fmt: skip
    scores = score_conversations(scorer, tok, items, length)
    assert scores[0] > scores[1]


def test_ppo_on_an_sft_adapter_merges_it_and_trains_a_new_adapter(models, data, tmp_path):
    policy = sft(models, data, "qwen2", tmp_path / "sft", lora=LORA)
    rm = reward(models, data, "qwen2", tmp_path / "rm")
    out = ppo(policy, rm, data, tmp_path / "ppo", lora=LORA, value_model="head")
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str((out / "base").resolve()) and (out / "base" / "config.json").exists()
    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(out)


def test_lora_targets_that_match_nothing_are_one_clear_error(models, data, tmp_path):
    with pytest.raises(RlhfkitError, match="--lora-targets: nope match no module.*q_proj"):
        sft(models, data, "qwen2", tmp_path / "sft", lora=LoraOptions(lora_r=4, lora_targets=["nope"]))


def test_default_lora_targets_per_architecture(models):
    from rlhfkit.lora import default_targets

    assert set(default_targets(load_causal_lm(models["llama"]))) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # fmt: skip
    assert set(default_targets(load_causal_lm(models["gpt_neox"]))) == {
        "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}  # fmt: skip


def test_a_model_without_chat_template_is_a_clear_error(corpus_file, data, tmp_path):
    bare = build_tiny("gpt_neox", corpus_file, tmp_path / "neox")
    with pytest.raises(RlhfkitError, match="no chat template"):
        sft({"gpt_neox": bare}, data, "gpt_neox", tmp_path / "sft")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_saving_keeps_the_source_generation_config(models, data, tmp_path, lora):
    from transformers import GenerationConfig

    source = GenerationConfig.from_pretrained(models["qwen2"])
    out = sft(models, data, "qwen2", tmp_path / "sft", **({"lora": LORA} if lora else {}))
    saved = GenerationConfig.from_pretrained(out)
    assert saved.temperature == source.temperature == 0.7 and saved.do_sample
    assert set(source.eos_token_id) <= set(saved.eos_token_id)


def test_gradient_checkpointing_gives_the_same_training(models, data, tmp_path):
    plain = metrics(sft(models, data, "gemma2", tmp_path / "a", lora=LORA))
    checkpointed = metrics(
        sft(models, data, "gemma2", tmp_path / "b", lora=LORA, gradient_checkpointing=True)
    )
    assert [r["loss"] for r in plain] == pytest.approx([r["loss"] for r in checkpointed], rel=1e-4)


def test_dpo_with_lora_trains_an_adapter_and_keeps_the_reference(models, data, tmp_path):
    from rlhfkit.dpo.trainer import DPOConfig, DPOLoopConfig, run

    loop = DPOLoopConfig(max_steps=4, lr=1e-2, warmup_steps=1, eval_every=4, save_every=100, log_every=1)
    out = run(DPOConfig(policy=str(models["gemma2"]), data=str(data["pairs"]), eval_data=str(data["pairs"]),
                        out=str(tmp_path / "dpo"), epochs=0, batch_size=4, micro_batch_size=4, max_length=64,
                        device="cpu", lora=LORA, loop=loop))  # fmt: skip
    rows = metrics(out)
    assert rows[0]["loss"] == pytest.approx(
        0.6931, abs=1e-3
    )  # zero-initialised adapters: policy == reference
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["val_accuracy"] > 0.5
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        models["gemma2"].resolve()
    )


def test_rejection_sampling_rounds_chain_lora_adapters(models, data, tmp_path):
    from rlhfkit.cli import main

    rm = reward(models, data, "llama", tmp_path / "rm", lora=LORA)
    out = tmp_path / "rs"
    argv = ["rs", "--policy", str(models["llama"]), "--reward", str(rm), "--prompts", str(data["prompts"]),
            "--out", str(out), "--n", "2", "--rounds", "2", "--max-new-tokens", "6", "--keep-unfinished",
            "--sft-epochs", "1", "--sft-batch-size", "4", "--lr", "1e-2", "--warmup-steps", "1", "--device", "cpu",
            "--lora-r", "4", "--lora-targets", "q_proj", "v_proj"]  # fmt: skip
    assert main(argv) == 0
    first = json.loads((out / "rounds" / "0" / "policy" / "adapter_config.json").read_text())
    final = json.loads((out / "adapter_config.json").read_text())
    assert first["base_model_name_or_path"] == str(models["llama"].resolve())
    assert sorted(first["target_modules"]) == ["q_proj", "v_proj"]
    # round 1 started from round 0's adapter merged into its base, saved as the new adapter's base
    assert final["base_model_name_or_path"] == str((out / "base").resolve())


def test_ppo_with_lora_resumes_exactly_from_an_adapter_only_checkpoint(models, data, tmp_path):
    from rlhfkit.ppo import PPOConfig, run
    from rlhfkit.ppo.config import PPOLoopConfig

    def length_reward(prompts, texts, ids):
        return [len(r) / 6 for r in ids]

    def config(out, steps):
        return PPOConfig(policy=str(models["qwen2"]), prompts=str(data["prompts"]), out=str(out), steps=steps,
                         batch_size=4, minibatch_size=2, epochs=1, max_new_tokens=6, sample_every=0, device="cpu",
                         value_model="head", lora=LORA, loop=PPOLoopConfig(lr=1e-3, warmup_steps=1, save_every=100))  # fmt: skip

    straight = metrics(run(config(tmp_path / "straight", 2), reward_fn=length_reward))
    run(config(tmp_path / "resumed", 1), reward_fn=length_reward)
    resumed = metrics(run(config(tmp_path / "resumed", 2), reward_fn=length_reward))
    for key in ("reward", "kl", "policy_loss", "response_length"):
        assert resumed[-1][key] == pytest.approx(straight[-1][key], abs=1e-6), key


def test_pretrain_takes_dtype_and_gradient_checkpointing(corpus_file, tokenizer_dir, tmp_path):
    from rlhfkit.train.loop import LoopConfig
    from rlhfkit.train.pretrain import PretrainConfig, run

    def losses(out, **kw):
        loop = LoopConfig(max_steps=3, warmup_steps=1, eval_every=100, log_every=1, save_every=100)
        cfg = PretrainConfig(data=str(corpus_file), tokenizer=str(tokenizer_dir), out=str(out), preset="micro",
                             seq_len=32, batch_size=4, micro_batch_size=4, eval_tokens=256, device="cpu",
                             loop=loop, **kw)  # fmt: skip
        return [r["loss"] for r in metrics(run(cfg))]

    plain = losses(tmp_path / "a")
    assert losses(tmp_path / "b", dtype="float32", gradient_checkpointing=True) == pytest.approx(
        plain, rel=1e-5
    )
    with pytest.raises(RlhfkitError, match="--dtype"):
        losses(tmp_path / "c", dtype="fp8")
