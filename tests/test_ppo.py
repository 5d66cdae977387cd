"""PPO end to end on micro models: the reward rises with bounded KL, resume is exact, NaN rewards are skipped,
and the CLI runs against a reward-model folder (critic from the RM, gold judge, PPO-ptx, HF output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import WORDS  # noqa: E402
from rlhfkit.cli import main
from rlhfkit.ppo import PPOConfig, run
from rlhfkit.ppo.config import PPOLoopConfig

TARGET = range(100, 160)  # the synthetic reward likes these token ids (~1/5 of the vocabulary)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def target_fraction(prompts, texts, ids) -> list[float]:
    return [sum(t in TARGET for t in r) / max(len(r), 1) for r in ids]


def config(policy_dir: Path, prompts_file: Path, out: Path, **kw) -> PPOConfig:
    loop = PPOLoopConfig(lr=kw.pop("lr", 1e-2), warmup_steps=1, save_every=100)
    defaults = dict(policy=str(policy_dir), prompts=str(prompts_file), out=str(out), steps=10, batch_size=32,
                    epochs=2, minibatch_size=16, max_new_tokens=12, beta=0.02, kl_target=0.0,
                    normalize_reward=False, missing_eot_penalty=0.0, value_model="head", sample_every=0,
                    max_approx_kl=0.0, device="cpu", loop=loop)  # fmt: skip
    defaults.update(kw)
    return PPOConfig(**defaults)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_ppo_raises_a_reachable_reward_while_kl_stays_bounded(policy_dir, prompts_file, tmp_path):
    out = run(config(policy_dir, prompts_file, tmp_path / "ppo"), reward_fn=target_fraction)
    rows = metrics(out)
    assert len(rows) == 10
    first = sum(r["reward"] for r in rows[:2]) / 2
    last = sum(r["reward"] for r in rows[-2:]) / 2
    assert last > first + 0.2, (first, last)
    assert all(0 <= r["kl"] < 15 for r in rows), [r["kl"] for r in rows]
    for key in ("entropy", "clip_frac", "approx_kl", "value_loss", "policy_loss", "beta", "response_length",
                "tokens_per_s", "time_generation", "time_scoring", "time_training", "gold_reward"):  # fmt: skip
        assert key in rows[-1], key
    # the output is a Hugging Face policy plus the value head and the manifest
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    assert (out / "value_head.safetensors").exists()
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["stage"] == "ppo" and manifest["reward_model"] == "python callable"


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_critic_free_methods_raise_the_reward_without_a_value_model(
    method, policy_dir, prompts_file, tmp_path
):
    from rlhfkit.ppo.trainer import GRPOConfig, RLOOConfig

    cls = RLOOConfig if method == "rloo" else GRPOConfig
    base = config(policy_dir, prompts_file, tmp_path / method)
    cfg = cls(**{**base.__dict__, "advantage": cls.advantage, "samples_per_prompt": 4, "value_model": "auto",
                 "kl_penalty": cls.kl_penalty, "whiten_advantages": False, "sample_every": 10})  # fmt: skip
    out = run(cfg, reward_fn=target_fraction)
    rows = metrics(out)
    first = sum(r["reward"] for r in rows[:2]) / 2
    last = sum(r["reward"] for r in rows[-2:]) / 2
    assert last > first + 0.15, (first, last)
    assert "value_loss" not in rows[-1] and ("kl_loss" in rows[-1]) == (method == "grpo")
    assert not (out / "value").exists() and not (out / "value_head.safetensors").exists()
    assert json.loads((out / "rlhfkit.json").read_text())["stage"] == method
    # every prompt of a rollout got k responses in a row: 32 episodes = 8 prompts x 4
    ids = [json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines()][-32:]
    assert len(set(ids)) == 8 and all(ids[i] == ids[i - i % 4] for i in range(32))


def test_critic_free_methods_reject_a_single_sample_per_prompt(policy_dir, prompts_file, tmp_path, capsys):
    code = main(["rloo", "--policy", str(policy_dir), "--reward", "x", "--prompts", str(prompts_file),
                 "--out", str(tmp_path / "r"), "--samples-per-prompt", "1"])  # fmt: skip
    assert code == 1
    assert "--samples-per-prompt must be >= 2" in capsys.readouterr().err
    code = main(["grpo", "--policy", str(policy_dir), "--reward", "x", "--prompts", str(prompts_file),
                 "--out", str(tmp_path / "g"), "--batch-size", "30"])  # fmt: skip
    assert code == 1
    assert "multiple of --samples-per-prompt" in capsys.readouterr().err


def test_int8_rollouts_sample_the_policy_as_it_trains(policy_dir, monkeypatch):
    from rlhfkit.generation import SamplingParams, lean_llama
    from rlhfkit.generation.int8_linear import Int8Linear
    from rlhfkit.models import load_causal_lm
    from rlhfkit.ppo.rollout import sample_responses

    made = []

    class Counted(Int8Linear):
        def __init__(self, *args):
            made.append(1)
            super().__init__(*args)

    monkeypatch.setattr(lean_llama, "Int8Linear", Counted)

    policy = load_causal_lm(policy_dir)  # trainable: its weights require grad
    prompts = [[5 + i, 7, 9 + i] for i in range(8)]
    # Sampled, seeded: this random model's greedy replies repeat one token, which would tell nothing apart.
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=0)

    def tokens(quantize: str) -> list[int]:
        done = sample_responses(policy, None, prompts, params, 0, 8, quantize)
        return [t for c in done for t in c.token_ids]

    def agree(a: list[int], b: list[int]) -> float:
        return sum(x == y for x, y in zip(a, b)) / max(len(a), len(b))

    before = tokens("int8")
    layers = len(made)
    assert layers > 0  # int8 copies sampled them
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # an update: every weight moves
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std().nan_to_num())
    after, exact = tokens("int8"), tokens("none")
    assert len(made) == 2 * layers  # made afresh for the second rollout
    # int8 copies of the updated weights, not of the first ones: they sample what the fp32 policy samples
    # (all 80 tokens, measured), and stale copies would sample what they sampled before (30 of 80)
    assert agree(after, exact) >= 0.9 and agree(after, before) < 0.7


def test_grpo_with_int8_rollouts_raises_the_reward(policy_dir, prompts_file, tmp_path):
    from rlhfkit.ppo.trainer import GRPOConfig

    base = config(policy_dir, prompts_file, tmp_path / "g")
    cfg = GRPOConfig(**{**base.__dict__, "advantage": GRPOConfig.advantage, "samples_per_prompt": 4,
                        "value_model": "auto", "kl_penalty": GRPOConfig.kl_penalty, "whiten_advantages": False,
                        "generation_quantize": "int8"})  # fmt: skip
    rows = metrics(run(cfg, reward_fn=target_fraction))
    first = sum(r["reward"] for r in rows[:2]) / 2
    last = sum(r["reward"] for r in rows[-2:]) / 2
    assert last > first + 0.15, (first, last)


def test_int8_rollouts_refuse_what_cannot_sample_in_int8(policy_dir, prompts_file, tmp_path):
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.lora import LoraOptions

    with pytest.raises(RlhfkitError, match="--generation-quantize: expected one of none, int8, got 'int4'"):
        run(
            config(policy_dir, prompts_file, tmp_path / "a", generation_quantize="int4"),
            reward_fn=target_fraction,
        )
    lora = config(
        policy_dir, prompts_file, tmp_path / "b", generation_quantize="int8", lora=LoraOptions(lora_r=4)
    )
    with pytest.raises(
        RlhfkitError, match="--generation-quantize int8: a LoRA policy samples through its own"
    ):
        run(lora, reward_fn=target_fraction)


def test_a_strong_kl_penalty_keeps_the_policy_closer_to_the_reference(policy_dir, prompts_file, tmp_path):
    loose = metrics(run(config(policy_dir, prompts_file, tmp_path / "a", steps=6), reward_fn=target_fraction))
    tight = metrics(
        run(config(policy_dir, prompts_file, tmp_path / "b", steps=6, beta=2.0), reward_fn=target_fraction)
    )
    assert sum(r["kl"] for r in tight[-3:]) < sum(r["kl"] for r in loose[-3:])


def test_resume_continues_the_same_run(policy_dir, prompts_file, tmp_path):
    kw = dict(steps=4, value_model="critic", kl_target=3.0, kl_horizon=100)
    straight = run(config(policy_dir, prompts_file, tmp_path / "straight", **kw), reward_fn=target_fraction)
    resumed_dir = tmp_path / "resumed"
    run(config(policy_dir, prompts_file, resumed_dir, **{**kw, "steps": 2}), reward_fn=target_fraction)
    run(config(policy_dir, prompts_file, resumed_dir, **kw), reward_fn=target_fraction)
    a, b = metrics(straight), metrics(resumed_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("reward", "kl", "beta", "policy_loss", "value_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)
    from safetensors.torch import load_file

    wa, wb = load_file(str(straight / "model.safetensors")), load_file(str(resumed_dir / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert (resumed_dir / "value" / "config.json").exists()


def test_a_nan_reward_skips_the_batch_and_says_so(policy_dir, prompts_file, tmp_path, capsys):
    calls = {"n": 0}

    def flaky(prompts, texts, ids):
        calls["n"] += 1
        scores = target_fraction(prompts, texts, ids)
        if calls["n"] == 2:
            scores[3] = float("nan")
        return scores

    out = run(config(policy_dir, prompts_file, tmp_path / "nan", steps=3), reward_fn=flaky)
    rows = metrics(out)
    assert [r.get("skipped", 0) for r in rows] == [0, 1, 0]
    assert "non-finite reward in 1/32 episodes" in capsys.readouterr().out
    from safetensors.torch import load_file

    assert all(torch.isfinite(v).all() for v in load_file(str(out / "model.safetensors")).values())
    assert all(r["kl"] == r["kl"] for r in rows if not r.get("skipped"))  # finite (not NaN) where trained


def test_cli_with_a_reward_model_folder_critic_from_the_rm_and_ptx(
    policy_dir, prompts_file, rm_dir, tmp_path
):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((" ".join(WORDS) + ".\n") * 30)
    out = tmp_path / "cli"
    argv = ["ppo", "--policy", str(policy_dir), "--reward", str(rm_dir), "--prompts", str(prompts_file),
            "--out", str(out), "--steps", "2", "--batch-size", "8", "--minibatch-size", "4", "--epochs", "1",
            "--max-new-tokens", "8", "--ptx-coef", "0.5", "--ptx-data", str(corpus), "--ptx-seq-len", "16",
            "--ptx-batch-size", "2", "--sample-every", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    rows = metrics(out)
    assert len(rows) == 2 and "ptx_loss" in rows[-1] and "gold_reward" in rows[-1]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16 and {"prompt", "response", "reward", "gold"} <= set(samples[0])
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["reward_normalization"]["std"] == 0.5
    assert (out / "value" / "config.json").exists() and (out / "generation_config.json").exists()


def test_cli_errors_are_one_line(policy_dir, prompts_file, tmp_path, capsys):
    assert main(["ppo", "--policy", str(policy_dir), "--prompts", str(prompts_file)]) == 1
    assert "--reward is required" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": 3}]}\n')
    assert main(["ppo", "--policy", str(policy_dir), "--reward", "x", "--prompts", str(bad)]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_bf16_autocast_trains_with_a_ratio_that_starts_at_one(policy_dir, prompts_file, tmp_path):
    rows = metrics(
        run(
            config(policy_dir, prompts_file, tmp_path / "bf16", steps=2, epochs=1, lr=1e-6, dtype="bfloat16"),
            reward_fn=target_fraction,
        )  # fmt: skip
    )
    assert all(r["approx_kl"] < 1e-3 and r["ratio"] == pytest.approx(1.0, abs=1e-2) for r in rows)


def test_the_gold_judge_scores_only_demo_world_prompts():
    from rlhfkit.ppo.trainer import uses_gold_judge

    world = {"messages": [], "meta": {"kind": "capital", "task": "factual", "answers": ["Paris"]}}
    other = {"messages": [], "meta": {"source": "hh-rlhf", "split": "train"}}  # a converted dataset's meta
    assert uses_gold_judge(True, [world, world])
    assert not uses_gold_judge(True, [world, other]) and not uses_gold_judge(True, [{"messages": []}])
    assert not uses_gold_judge(False, [world])


def test_the_loop_settings_nest_and_bf16_is_an_alias_of_dtype(tmp_path, capsys):
    """`--lr`/`--seed` set the nested loop config; the loop settings PPO does not read are no options; the old
    `--bf16` (flag or TOML key) means `--dtype bfloat16`, with a warning, and cannot contradict `--dtype`."""
    from rlhfkit.cli import build_parser
    from rlhfkit.config import config_from_args, config_from_options
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.ppo.config import GRPOConfig

    parser = build_parser()
    args = parser.parse_args(["grpo", "--lr", "0.001", "--seed", "3", "--bf16"])
    cfg = config_from_args(GRPOConfig, args, "grpo")
    assert (cfg.loop.lr, cfg.loop.seed, cfg.loop.warmup_steps, cfg.dtype) == (1e-3, 3, 3, "bfloat16")
    assert not hasattr(cfg, "bf16") and cfg.kl_penalty == "loss"
    assert "--bf16 is deprecated; use --dtype bfloat16" in capsys.readouterr().err
    toml = tmp_path / "old.toml"
    toml.write_text("[grpo]\nbf16 = true\nsave-every = 5\n")
    cfg = config_from_args(GRPOConfig, parser.parse_args(["grpo", "--config", str(toml)]), "grpo")
    assert (cfg.dtype, cfg.loop.save_every) == ("bfloat16", 5)
    assert config_from_options(PPOConfig, {"bf16": False}, "here").dtype == "auto"
    with pytest.raises(
        RlhfkitError, match="--bf16 means --dtype bfloat16, which contradicts --dtype float32"
    ):
        config_from_args(GRPOConfig, parser.parse_args(["grpo", "--bf16", "--dtype", "float32"]), "grpo")
    with pytest.raises(SystemExit):  # PPO's learning rate is constant after warmup: no cosine to shape
        parser.parse_args(["ppo", "--min-lr-ratio", "0.5"])
    with pytest.raises(RlhfkitError, match="unknown option.*max_steps"):
        config_from_options(PPOConfig, {"max-steps": 5}, "here")
