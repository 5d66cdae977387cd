"""Stage 3c: PPO against a reward model with a KL leash to the SFT model — the outer loop.

`run(PPOConfig, reward_fn=None) -> Path`. One PPO step:

1. take `batch_size` prompts (a pure function of seed and step, so a resumed run sees the same prompts);
2. roll out: sample one response each, score it (reward model, or `reward_fn` for tests and custom rewards),
   and compute old log-probs, reference log-probs and values (`rollout.py`);
3. turn scores into per-token rewards with the KL penalty, then GAE advantages and returns, whitened
   (`advantages.py`);
4. `epochs` passes over shuffled minibatches of the rollout, minimizing
   `policy_loss + vf_coef * value_loss - ent_coef * entropy (+ ptx_coef * pretraining loss)` (`losses.py`),
   with gradient clipping, a NaN/inf guard per minibatch, and an early stop of the epochs when the
   approximate KL to the rollout policy explodes;
5. update beta from the measured KL (`kl_controller.py`), log a line to `metrics.jsonl`, sample now and then,
   checkpoint every `save_every` steps.

A rollout whose rewards or log-probs are not finite is skipped whole, with a message and `skipped: 1` in the
metrics: one bad reward would otherwise turn every advantage of the batch (whitening) into NaN.

The value function is a separate critic initialized from the reward model by default (DeepSpeed-Chat,
N+ implementation details) — it already knows what a good response looks like — or a linear value head on
the policy's last hidden state (`value_model = "head"`, lm-human-preferences), which halves training compute
but lets value errors push on the policy's features. One AdamW optimizer holds the policy and the value
parameters; the checkpoint saves both plus beta and the reward normalization, so resume is exact.

Output: the policy as a Hugging Face checkpoint in `out` (with tokenizer and a generation config that stops at
end of turn), the critic in `out/value/` (or `out/value_head.safetensors`), `rlhfkit.json`, `metrics.jsonl`
and `samples.jsonl`.

With `--lora-r` the policy trains LoRA adapters and the reference is the same weights with the adapters
disabled (no reference model is loaded); the critic trains adapters too unless `--no-critic-lora`; the output
is a peft adapter folder on the policy's base (`rlhfkit.lora`). `--dtype` and `--gradient-checkpointing` are
described in `train/precision.py` and `lora.enable_gradient_checkpointing`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from rlhfkit.artifacts import read_manifest, save_hf_checkpoint, write_manifest
from rlhfkit.data.chats import load_prompts
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import SamplingParams, end_of_turn_ids, pad_id, render_chat
from rlhfkit.lora import (
    LoraOptions,
    apply_lora,
    enable_gradient_checkpointing,
    load_frozen_lm,
    load_trainable_lm,
    trainable_parameters,
)
from rlhfkit.ppo import distributed as ranks
from rlhfkit.ppo.advantages import (
    gae,
    group_normalized,
    kl_loss,
    leave_one_out,
    per_token_rewards,
    shape_scores,
    whiten,
)
from rlhfkit.ppo.kl_controller import KLController
from rlhfkit.ppo.losses import masked_mean, policy_loss, value_loss
from rlhfkit.ppo.rollout import RewardFn, Rollout, collect, critic_values, measure
from rlhfkit.saving import saving_into
from rlhfkit.tokenizer import load_tokenizer
from rlhfkit.train.checkpoint import checkpoint_meta, find_checkpoint, load_checkpoint, save_checkpoint
from rlhfkit.train.distributed import DistInfo, any_rank, finish_distributed, init_distributed, pick_device
from rlhfkit.train.logits import causal_lm_of
from rlhfkit.train.loop import (
    LoopConfig,
    MetricsLog,
    _progress,
    epoch_batch_indices,
    last_logged,
    make_optimizer,
    set_seed,
)
from rlhfkit.train.precision import Precision

VALUE_MODELS = ("auto", "critic", "head", "none")
ADVANTAGES = ("gae", "rloo", "grpo")
KL_PENALTIES = ("reward", "loss")


@dataclass
class PPOConfig:
    policy: str = ""  # SFT checkpoint: the policy starts here and it is the frozen reference
    reward: str = ""  # reward model folder (AutoModelForSequenceClassification, num_labels=1)
    prompts: str = (
        ""  # prompts JSONL ({"messages": [...], "meta": ...}); a trailing assistant turn is dropped
    )
    out: str = (
        "runs/ppo"  # output folder: the policy (Hugging Face checkpoint), value model, metrics, samples
    )
    ref: str | None = None  # reference model (default: the policy checkpoint)
    value_model: str = "auto"  # "critic": separate model (init from value_init); "head": head on the policy;
    # "none": no value function (rloo, grpo); "auto": a critic for gae, none otherwise
    advantage: str = "gae"  # "gae" (PPO: critic + GAE), "rloo" (leave-one-out), "grpo" (group-normalized)
    samples_per_prompt: int = 1  # k responses to each prompt per rollout (rloo/grpo need >= 2)
    kl_penalty: str = (
        "reward"  # the KL leash: "reward" (-beta*KL in the return) or "loss" (beta*k3 in the loss)
    )
    value_init: str | None = None  # critic's starting checkpoint (default: the reward model, else the policy)
    steps: int = 100  # PPO steps (rollout batches)
    batch_size: int = 64  # episodes (responses) per rollout: batch_size / samples_per_prompt prompts
    epochs: int = 4  # passes over each rollout
    minibatch_size: int = 16  # episodes per gradient step
    group_by_length: bool = True  # minibatches of similar-length episodes (less padding); order still random
    max_new_tokens: int = 64  # response cap; longer responses are cut (and pay missing_eot_penalty)
    temperature: float = 1.0  # sampling temperature (log-probs are taken at the same temperature)
    max_prompt_tokens: int = 192  # longer prompts lose their beginning
    lr: float = 5e-5  # constant after warmup (tiny models tolerate more than the 1e-6..3e-6 of 1B models)
    warmup_steps: int = 3  # optimizer steps of linear warmup
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this
    beta: float = 0.05  # initial KL coefficient
    kl_target: float = 6.0  # adaptive KL target in nats per response; 0: beta stays fixed
    kl_horizon: int = 10_000  # adaptive controller horizon, in episodes
    gamma: float = 1.0  # discount per token in the return
    lam: float = 1.0  # every token sees the final score (the first pick the kind of answer); TRL: 0.95
    clip: float = 0.2  # policy ratio clip
    value_clip: float = 0.2  # value-prediction clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss (value head on the policy)
    ent_coef: float = 0.0  # entropy bonus (entropy is always logged)
    whiten_advantages: bool = True  # normalize advantages to mean 0, std 1 per rollout
    normalize_reward: bool = True  # divide RM scores by their std (from the RM's rlhfkit.json, else step 1)
    reward_clip: float = 10.0  # clip normalized scores to +-this; 0: off
    missing_eot_penalty: float = 1.0  # subtracted from the score of responses cut off without end of turn
    max_approx_kl: float = 0.5  # stop this rollout's epochs when a minibatch's approx KL exceeds it; 0: off
    ptx_coef: float = 0.0  # PPO-ptx (InstructGPT): weight of a pretraining loss on ptx_data
    ptx_data: str | None = None  # corpus (.txt / JSONL {"text"} / folder) for PPO-ptx
    ptx_seq_len: int = 128  # tokens per PPO-ptx corpus window
    ptx_batch_size: int = 8  # corpus windows per minibatch
    gold_judge: bool = (
        True  # score responses with the demo world's gold judge when every prompt is a world task
    )
    rm_max_length: int | None = (
        None  # tokens the reward model reads per prompt + response (default: its training length)
    )
    sample_every: int = 10  # write responses to samples.jsonl (and show a few) every N steps; 0: never
    num_samples: int = 3  # responses shown on the console at each sampling
    save_every: int = 10  # checkpoint every N steps (and at the end); a rerun resumes from it
    generation_batch_size: int = 64  # sequences decoded together in a rollout
    forward_batch_size: int = 16  # rows per no-grad forward (rollout measuring, RM scoring), longest first
    bf16: bool = (
        False  # bfloat16 autocast for transformer bodies (heads, losses fp32); faster on bf16 hardware
    )
    seed: int = 0  # seeds sampling, minibatch order and initialization
    device: str = "auto"  # auto (CUDA when available), cpu or cuda
    shard: str = (
        "auto"  # under torchrun: auto or ddp (policy and critic under DDP; reference and RM replicated)
    )
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; trained weights stay fp32 under a CUDA autocast; frozen models (reward, reference, a LoRA
    # run's base) are loaded in it
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory,
    # about a third slower
    lora: LoraOptions = field(default_factory=LoraOptions)  # LoRA policy: the reference is the same
    # weights with the adapters disabled (no second copy)
    critic_lora: bool = True  # with --lora-r: the critic trains LoRA adapters (and its whole head) too;
    # --no-critic-lora trains every critic weight (a second full model plus its AdamW state)


@dataclass
class RLOOConfig(PPOConfig):
    """`rlhfkit rloo`: PPO's loop without a critic; each response is compared with the other k - 1 to its prompt."""

    advantage: str = "rloo"
    samples_per_prompt: int = 4
    whiten_advantages: bool = False  # the leave-one-out baseline already centres them


@dataclass
class GRPOConfig(PPOConfig):
    """`rlhfkit grpo`: group-normalized advantages and the KL to the reference as a loss term (DeepSeekMath)."""

    advantage: str = "grpo"
    samples_per_prompt: int = 4
    kl_penalty: str = "loss"
    whiten_advantages: bool = False  # each group is already normalized


METHOD_NAMES = {"gae": "ppo", "rloo": "rloo", "grpo": "grpo"}


def rm_reward_fn(
    path: str, device, max_length: int | None, batch_size: int, dtype: torch.dtype = torch.float32
) -> tuple[RewardFn, dict]:
    """A reward function over a reward-model folder (a LoRA RM's adapter folder too), and the RM's recorded
    score statistics. The RM is frozen, so it is loaded in `dtype`."""
    from rlhfkit.reward.model import encode, load_scorer, score_ids

    rm, rm_tokenizer, max_length = load_scorer(path, device, max_length, dtype=dtype, optimize=True)

    def score(prompts: list[list[dict]], texts: list[str], _ids: list[list[int]]) -> list[float]:
        rows = [
            encode(rm_tokenizer, p, [{"role": "assistant", "content": t}], max_length)
            for p, t in zip(prompts, texts)
        ]
        return score_ids(rm, rm_tokenizer, rows, batch_size)

    manifest = read_manifest(path)
    std = (manifest.get("calibration") or {}).get("std") or (manifest.get("metrics") or {}).get("score_std")
    return score, ({"score_std": float(std)} if std else {})


def uses_gold_judge(wanted: bool, records: list[dict]) -> bool:
    """The gold judge scores only demo-world prompts: every record's `meta` must name a world task (any other
    `meta`, e.g. a converted dataset's, would be scored on generic parts only and mislead)."""
    from rlhfkit.world.tasks import is_world_meta

    return wanted and all(is_world_meta(r.get("meta")) for r in records)


def gold_scores(records: list[dict], indices: list[int], texts: list[str]) -> list[float]:
    from rlhfkit.world import judge_score

    return [
        judge_score(records[i]["messages"], t, records[i].get("meta")).total for i, t in zip(indices, texts)
    ]


def build_value(cfg: PPOConfig, policy, device, has_rm: bool, base: str | None = None):
    """(value module to train, value_fn(batch, policy_hidden) -> values); (None, None) without a value model.
    `base`: the policy's starting checkpoint (an adapter policy's merged base), the critic's fallback init."""
    base = base or cfg.policy
    if cfg.value_model == "none":
        return None, None
    if cfg.value_model == "head":
        head = torch.nn.Linear(policy.config.hidden_size, 1).to(device)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        return head, lambda batch, hidden: head(hidden.to(head.weight.dtype))[..., 0].float() * batch["mask"]
    from rlhfkit.reward.model import load_reward_model, scalar_head_name

    init = cfg.value_init or (cfg.reward if has_rm else base)
    lora = cfg.lora.enabled and cfg.critic_lora
    dtype = Precision.of(device, cfg.dtype).trainable_load_dtype(lora)
    critic, _ = load_reward_model(init, device, new_head=init == base, dtype=dtype)
    if not is_decoder_only(critic.config) or not hasattr(critic, "base_model"):
        raise RlhfkitError(f"{init}: the critic needs a causal (decoder) backbone")
    head_name = scalar_head_name(critic)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(critic)
    if lora:
        critic = apply_lora(critic, cfg.lora, head=head_name)
    head = causal_lm_of(critic).get_submodule(head_name)  # with LoRA: the wrapper that runs the trained copy
    return critic, lambda batch, hidden: critic_values(critic, head, batch)


def is_decoder_only(config) -> bool:
    """A causal-LM family that is not also a masked (bidirectional) encoder such as BERT: its state at each
    position sees only the tokens before it, as a critic's must."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _check(cfg: PPOConfig, has_reward_fn: bool) -> None:
    if not cfg.policy:
        raise RlhfkitError("--policy is required (the SFT checkpoint folder)")
    if not cfg.reward and not has_reward_fn:
        raise RlhfkitError("--reward is required (a reward model folder)")
    if not cfg.prompts:
        raise RlhfkitError("--prompts is required (a prompts JSONL file)")
    for name, allowed in (
        ("value_model", VALUE_MODELS),
        ("advantage", ADVANTAGES),
        ("kl_penalty", KL_PENALTIES),
    ):
        if getattr(cfg, name) not in allowed:
            raise RlhfkitError(
                f"--{name.replace('_', '-')}: expected one of {', '.join(allowed)}, got '{getattr(cfg, name)}'"
            )
    if cfg.advantage != "gae" and cfg.samples_per_prompt < 2:
        raise RlhfkitError(
            f"--advantage {cfg.advantage} compares responses to the same prompt: --samples-per-prompt must be "
            f">= 2, got {cfg.samples_per_prompt}"
        )
    if cfg.advantage != "gae" and cfg.value_model in ("critic", "head"):
        raise RlhfkitError(
            f"--advantage {cfg.advantage} needs no value model: use --value-model none or auto"
        )
    if cfg.advantage == "gae" and cfg.value_model == "none":
        raise RlhfkitError("--advantage gae needs a value model (critic or head)")
    if cfg.samples_per_prompt < 1 or cfg.batch_size % cfg.samples_per_prompt:
        raise RlhfkitError(
            f"--batch-size {cfg.batch_size} must be a multiple of --samples-per-prompt {cfg.samples_per_prompt}"
        )
    for name in ("steps", "batch_size", "epochs", "minibatch_size", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise RlhfkitError(
                f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(cfg, name)}"
            )
    if cfg.temperature <= 0:
        raise RlhfkitError(f"--temperature: expected a number > 0 (PPO samples), got {cfg.temperature}")
    if cfg.ptx_coef > 0 and not cfg.ptx_data:
        raise RlhfkitError("--ptx-coef > 0 needs --ptx-data (a pretraining corpus)")


def run(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> Path:
    """Train (or resume) a PPO run; return the output folder. `reward_fn` replaces the reward model."""
    _check(cfg, reward_fn is not None)
    if cfg.value_model == "auto":
        cfg = replace(cfg, value_model="critic" if cfg.advantage == "gae" else "none")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    info = init_distributed(device)
    ranks.check_world(cfg.batch_size, cfg.minibatch_size, cfg.shard, info)
    say = print if info.is_main else (lambda *_a, **_k: None)
    set_seed(cfg.seed)
    precision = Precision.of(device, cfg.dtype)

    tokenizer = load_tokenizer(cfg.policy)
    if tokenizer.chat_template is None:
        raise RlhfkitError(
            f"{cfg.policy}: the tokenizer has no chat template; PPO needs one to render prompts"
        )
    policy, base = load_trainable_lm(cfg.policy, out, device, cfg.dtype, cfg.gradient_checkpointing, cfg.lora)
    # With LoRA and no other reference, the reference is the policy with its adapters disabled (ref None).
    ref = None
    if cfg.ref or not cfg.lora.enabled:
        ref = load_frozen_lm(cfg.ref or base, device, precision.dtype)
    records = load_prompts(cfg.prompts)
    # Prompts keep their end (the question) and leave room for the response within the position limit.
    limit = getattr(policy.config, "max_position_embeddings", None) or 10**9
    max_prompt = min(cfg.max_prompt_tokens, limit - cfg.max_new_tokens)
    if max_prompt < 8:
        raise RlhfkitError(
            f"--max-new-tokens {cfg.max_new_tokens} leaves no room for prompts in the policy's {limit} positions"
        )
    prompt_ids = [
        tokenizer(render_chat(tokenizer, r["messages"]), add_special_tokens=False)["input_ids"][-max_prompt:]
        for r in records
    ]
    rm_stats: dict = {}
    if reward_fn is None:
        reward_fn, rm_stats = rm_reward_fn(
            cfg.reward, device, cfg.rm_max_length, cfg.forward_batch_size, precision.dtype
        )
    use_gold = uses_gold_judge(cfg.gold_judge, records)
    value_module, value_fn = build_value(cfg, policy, device, has_rm=bool(cfg.reward), base=base)
    modules = torch.nn.ModuleDict({"policy": policy, **({"value": value_module} if value_module else {})})
    trainable = [p for p in modules.parameters() if p.requires_grad]
    forward = ranks.training_forward(modules, value_fn, cfg.temperature, cfg.ent_coef > 0, info)
    optimizer = make_optimizer(
        modules, LoopConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, beta1=0.9, beta2=0.95)
    )
    ptx_stream = _ptx_stream(cfg, tokenizer) if cfg.ptx_coef > 0 else None

    kl_ctl = KLController(cfg.beta, cfg.kl_target if cfg.kl_target > 0 else None, cfg.kl_horizon)
    norm = {"mean": 0.0, "std": float(rm_stats.get("score_std", 0.0)) or None}
    if not cfg.normalize_reward:
        norm = {"mean": 0.0, "std": 1.0}
    start = 0
    ckpt = find_checkpoint(out)
    if ckpt is not None:
        ranks.check_resume_world(ckpt, checkpoint_meta(ckpt)["world_size"], info)
        start, extra = load_checkpoint(ckpt, modules, optimizer)
        kl_ctl.beta = float(extra["beta"])
        norm = extra["norm"]
        say(f"ppo: resuming from {ckpt} at step {start}/{cfg.steps}")
    log = MetricsLog(out / "metrics.jsonl", start if ckpt is not None else None, enabled=info.is_main)
    samples_path = out / "samples.jsonl"
    if info.is_main:
        _trim_samples(samples_path, start if ckpt is not None else 0)
    stop_ids = end_of_turn_ids(tokenizer, causal_lm_of(policy))  # with every eos id of its generation config
    pad = pad_id(tokenizer)
    say(
        f"ppo: {len(records)} prompts, {cfg.steps} steps x {cfg.batch_size} episodes "
        f"({cfg.samples_per_prompt} per prompt), {cfg.epochs} epochs of minibatches of {cfg.minibatch_size}, "
        f"advantages: {cfg.advantage}, value model: {cfg.value_model}, KL in the {cfg.kl_penalty}, "
        f"gold judge: {'on' if use_gold else 'off'}, device {device}, "
        f"{info.world_size} process(es), {trainable_parameters(modules):,} trainable parameters"
    )

    last: dict = {}
    t_run = time.perf_counter()
    with _progress(cfg.steps, info.is_main) as progress:
        task = progress.add_task("ppo", total=cfg.steps, completed=start, info="")
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            k = cfg.samples_per_prompt  # each prompt's k responses sit in consecutive rows
            idx = [
                i
                for i in epoch_batch_indices(len(records), cfg.batch_size // k, cfg.seed, step)
                for _ in range(k)
            ]
            idx = ranks.episode_share(idx, info)  # this rank's episodes; the batch stays global
            params = SamplingParams(
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                stop_token_ids=stop_ids,
                seed=ranks.rank_seed((cfg.seed * 1_000_003 + step) % 2**62, info),
            )
            rollout = collect(
                policy,
                tokenizer,
                [prompt_ids[i] for i in idx],
                [records[i]["messages"] for i in idx],
                idx,
                reward_fn,
                params,
                pad_id=pad,
                device=device,
                generation_batch_size=cfg.generation_batch_size,
            )
            t_gold = time.perf_counter()
            gold = gold_scores(records, idx, rollout.texts) if use_gold else None
            rollout.timings["scoring"] += time.perf_counter() - t_gold
            measure(
                rollout,
                policy,
                ref,
                value_fn,
                cfg.temperature,
                cfg.forward_batch_size,
                lambda: amp(cfg, device),
            )
            rollout, gold = ranks.gather_rollout(rollout, pad, info, gold)

            record = {"step": step + 1}
            bad = _non_finite(rollout)
            if bad:
                say(f"step {step + 1}: {bad}; rollout batch skipped")
                record.update({"skipped": 1, "skip_reason": bad})
            else:
                if norm["std"] is None:  # first rollout of the SFT policy sets the scale
                    std = float(rollout.raw_scores.std())
                    norm = {"mean": float(rollout.raw_scores.mean()), "std": std if std > 1e-6 else 1.0}
                record.update(
                    _train_on(
                        cfg,
                        rollout,
                        kl_ctl,
                        norm,
                        forward,
                        policy,
                        optimizer,
                        trainable,
                        ptx_stream,
                        step,
                        info,
                    )
                )
                kl_ctl.update(record["kl"], rollout.size)
            t_end = time.perf_counter()
            record.update(_rollout_metrics(rollout, gold, t_end - t0, lr, kl_ctl.beta, t_end - t_run))
            done = step + 1
            sample_now = cfg.sample_every and (done % cfg.sample_every == 0 or done in (start + 1, cfg.steps))
            if sample_now and info.is_main:
                _write_samples(samples_path, done, rollout, records, gold, cfg.num_samples, progress.console)
            log.write(record)
            last = record
            progress.update(task, completed=done, info=_summary(record))
            if (done % cfg.save_every == 0 or done == cfg.steps) and info.is_main:
                extra = {"beta": kl_ctl.beta, "norm": norm}
                save_checkpoint(out, modules, optimizer, done, extra, world_size=info.world_size)

    if info.is_main:
        last = last or last_logged(out / "metrics.jsonl")  # no step left to run: keep the final metrics
        _save_outputs(cfg, out, policy, value_module, tokenizer, stop_ids, last, kl_ctl, norm, use_gold, base)
    finish_distributed(info)
    return out


def amp(cfg: PPOConfig, device: torch.device):
    """The training forwards' mixed precision: `--bf16` (a bf16 autocast on any device), else `--dtype`'s
    (a CUDA autocast; nothing on a CPU)."""
    if cfg.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return Precision.of(device, cfg.dtype).autocast()


def _trim_samples(path: Path, keep_through: int) -> None:
    """Keep the sample lines of steps <= `keep_through` (0: start empty), so a resumed run does not repeat them."""
    kept = []
    if keep_through and path.exists():
        kept = [
            ln
            for ln in path.read_text(encoding="utf-8").splitlines()
            if json.loads(ln)["step"] <= keep_through
        ]
    path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


def _non_finite(rollout: Rollout) -> str | None:
    """A description of what is not finite in a rollout, or None if all is well."""
    n_bad = int((~torch.isfinite(rollout.raw_scores)).sum())
    if n_bad:
        return f"non-finite reward in {n_bad}/{rollout.size} episodes"
    for name in ("logprobs", "ref_logprobs", "values"):
        t = getattr(rollout, name)
        if not torch.isfinite(t).all():
            return f"non-finite {name.replace('_', ' ')}"
    return None


def _train_on(
    cfg,
    rollout,
    kl_ctl,
    norm,
    forward,
    policy,
    optimizer,
    params,
    ptx_stream,
    step,
    info: DistInfo | None = None,
) -> dict:
    """Rewards -> advantages -> `epochs` passes of clipped PPO over minibatches; returns the step's metrics.

    `forward(batch) -> (log-probs, entropy, values)` is `ppo.distributed.training_forward`'s module. Under
    torchrun every rank holds the same global rollout and takes its part of each minibatch (`ppo.distributed`)."""
    info = info or DistInfo()
    t0 = time.perf_counter()
    mask = rollout.mask
    scores = shape_scores(
        rollout.raw_scores,
        rollout.finished,
        norm["mean"],
        norm["std"],
        cfg.reward_clip,
        cfg.missing_eot_penalty,
    )
    advantages, returns, kl = compute_advantages(cfg, rollout, scores, kl_ctl.beta)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)

    generator = torch.Generator().manual_seed((cfg.seed * 7_919 + step) % 2**62)
    sums: dict[str, float] = {}
    updates, skipped, stopped_at = 0, 0, None
    lengths = rollout.lengths
    for epoch in range(cfg.epochs):
        minibatches = minibatch_order(lengths, cfg.minibatch_size, cfg.group_by_length, generator)
        for k, idx in enumerate(minibatches):
            idx = ranks.local_part(idx, info).to(mask.device)
            batch = rollout.rows(idx)
            width = batch["mask"].size(1)
            mb_mask = batch["mask"]
            share = ranks.token_share(mb_mask, info) if info.enabled else 1.0
            with amp(cfg, mask.device):
                logp, entropy, values = forward(batch)
            pg, pg_stats = policy_loss(
                logp, rollout.logprobs[idx, :width], advantages[idx, :width], mb_mask, cfg.clip
            )
            ent = masked_mean(entropy, mb_mask)
            loss = pg - cfg.ent_coef * ent
            stats = {"policy_loss": pg, "entropy": ent}
            if values is not None:
                vf, vf_stats = value_loss(
                    values, rollout.values[idx, :width], returns[idx, :width], mb_mask, cfg.value_clip
                )
                loss = loss + cfg.vf_coef * vf
                stats.update(value_loss=vf, **vf_stats)
            if cfg.kl_penalty == "loss":
                kl_term = kl_loss(logp, rollout.ref_logprobs[idx, :width], mb_mask)
                loss = loss + kl_ctl.beta * kl_term
                stats["kl_loss"] = kl_term
            if info.enabled:  # this rank's part of the minibatch's token mean (DDP averages over ranks)
                loss = loss * share
            ptx = None
            if ptx_stream is not None:  # the same corpus windows on every rank: DDP's average is this loss
                ptx = _ptx_loss(policy, ptx_stream, cfg, step * 10_000 + epoch * 1_000 + k)
                loss = loss + cfg.ptx_coef * ptx
            non_finite = not torch.isfinite(loss)
            if any_rank(non_finite, info) if info.enabled else non_finite:
                if info.is_main:
                    print(
                        f"step {step + 1}: non-finite loss in epoch {epoch + 1}, minibatch {k + 1}; skipped"
                    )
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if not torch.isfinite(grad_norm):  # gradients are all-reduced: every rank sees the same norm
                if info.is_main:
                    print(
                        f"step {step + 1}: non-finite gradient in epoch {epoch + 1}, minibatch {k + 1}; skipped"
                    )
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                continue
            optimizer.step()
            updates += 1
            stats["grad_norm"] = grad_norm
            stats.update(pg_stats)
            if ptx is not None:
                stats["ptx_loss"] = ptx
            stats = {name: float(v.detach() if torch.is_tensor(v) else v) for name, v in stats.items()}
            stats = ranks.global_means(stats, share, info)  # the whole minibatch's, on every rank
            for name, v in stats.items():
                sums[name] = sums.get(name, 0.0) + v
            if cfg.max_approx_kl > 0 and stats["approx_kl"] > cfg.max_approx_kl:
                stopped_at = epoch + 1
                break
        if stopped_at is not None:  # every rank stops here: approx_kl is the whole minibatch's
            if info.is_main:
                print(
                    f"step {step + 1}: approx KL {stats['approx_kl']:.3f} > {cfg.max_approx_kl} in epoch "
                    f"{stopped_at}; remaining epochs of this rollout skipped"
                )
            break

    metrics = {name: v / max(updates, 1) for name, v in sums.items()}
    seq_kl = kl.sum(-1)
    if returns is not None:
        metrics["value_explained_var"] = 1 - float(
            torch.var(returns[mask.bool()] - rollout.values[mask.bool()])
        ) / max(float(torch.var(returns[mask.bool()])), 1e-8)
    metrics.update(
        {
            "kl": float(seq_kl.mean()),
            "kl_per_token": float(kl.sum() / mask.sum().clamp(min=1)),
            "score": float(scores.mean()),
            "non_score_reward": float((-kl_ctl.beta * seq_kl).mean()),
            "return": float((scores - kl_ctl.beta * seq_kl).mean()),
            "updates": updates,
            "minibatches_skipped": skipped,
            "epochs_done": stopped_at if stopped_at is not None else cfg.epochs,
            "time_training": time.perf_counter() - t0,
        }
    )
    return metrics


def compute_advantages(
    cfg: PPOConfig, rollout: Rollout, scores: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(advantages [B, R], value targets [B, R] or None, per-token KL [B, R]) for the configured method.

    gae: per-token rewards (the KL penalty on every token when it is in the reward) and GAE over the critic's
    values. rloo / grpo: one number per response — its score, minus beta times its KL when the KL is in the
    reward — compared with the other responses to the same prompt; every token of a response shares it.
    """
    mask = rollout.mask
    reward_beta = beta if cfg.kl_penalty == "reward" else 0.0
    if cfg.advantage == "gae":
        rewards, kl = per_token_rewards(rollout.logprobs, rollout.ref_logprobs, scores, mask, reward_beta)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        return advantages, returns, kl
    kl = (rollout.logprobs - rollout.ref_logprobs) * mask
    sequence_return = scores - reward_beta * kl.sum(-1)
    baseline = leave_one_out if cfg.advantage == "rloo" else group_normalized
    return baseline(sequence_return, cfg.samples_per_prompt)[:, None] * mask, None, kl


def minibatch_order(
    lengths: torch.Tensor, size: int, group_by_length: bool, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch's minibatches: index tensors that cover every episode once, in a random order.

    A minibatch is padded to its longest episode, so mixing a 40-token and a 160-token episode pays for two
    160-token rows. `group_by_length` shuffles, sorts by length (stable, so ties stay shuffled), cuts into
    minibatches of neighbours and shuffles the minibatch order: each epoch still sees every episode once and
    in a random order of minibatches, but an episode shares its gradient step with similar-length ones
    (as `group_by_length` does in Hugging Face's Trainer).
    """
    order = torch.randperm(lengths.numel(), generator=generator)
    if group_by_length:
        order = order[torch.sort(lengths.cpu()[order], stable=True, descending=True).indices]
    chunks = list(order.split(size))
    if group_by_length:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    return chunks


def _rollout_metrics(rollout: Rollout, gold, seconds: float, lr: float, beta: float, elapsed: float) -> dict:
    lengths = rollout.mask.sum(-1)
    generated = float(lengths.sum())
    finite = rollout.raw_scores[torch.isfinite(rollout.raw_scores)]
    out = {
        "time": round(elapsed, 3),
        "reward": float(finite.mean()) if finite.numel() else float("nan"),
        "reward_std": float(finite.std()) if finite.numel() > 1 else 0.0,
        "beta": beta,
        "lr": lr,
        "response_length": float(lengths.mean()),
        "finished_fraction": float(rollout.finished.float().mean()),
        "episodes_per_s": rollout.size / max(seconds, 1e-9),
        "tokens_per_s": generated / max(seconds, 1e-9),
        "time_step": seconds,
        "time_generation": rollout.timings.get("generation", 0.0),
        "time_scoring": rollout.timings.get("scoring", 0.0),
        "time_forwards": rollout.timings.get("forwards", 0.0),
    }
    if gold is not None:
        out["gold_reward"] = float(np.mean(gold))
    return out


def _summary(record: dict) -> str:
    if record.get("skipped"):
        return "skipped"
    gold = f" gold {record['gold_reward']:.2f}" if "gold_reward" in record else ""
    return (
        f"reward {record['reward']:+.3f}{gold} | kl {record['kl']:.2f} | beta {record['beta']:.3f} | "
        f"len {record['response_length']:.0f} | {record['episodes_per_s']:.1f} ep/s"
    )


def _write_samples(path: Path, step: int, rollout: Rollout, records, gold, show: int, console) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for j, (i, text) in enumerate(zip(rollout.prompt_index, rollout.texts)):
            row = {
                "step": step,
                "id": records[i].get("id"),
                "category": records[i].get("category"),
                "prompt": records[i]["messages"],
                "response": text,
                "reward": float(rollout.raw_scores[j]),
                "finished": bool(rollout.finished[j]),
            }
            if gold is not None:
                row["gold"] = gold[j]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    console.print(f"[dim]step {step} samples:[/dim]")
    for j in range(min(show, rollout.size)):
        user = records[rollout.prompt_index[j]]["messages"][-1]["content"]
        console.print(f"  [{float(rollout.raw_scores[j]):+.2f}] {user[:60]!r} -> {rollout.texts[j][:120]!r}")


def _ptx_stream(cfg: PPOConfig, tokenizer) -> np.ndarray:
    from rlhfkit.train.lm_data import build_streams

    stream = build_streams(cfg.ptx_data, tokenizer, 0.01, None).train
    if len(stream) < cfg.ptx_seq_len + 2:
        raise RlhfkitError(f"{cfg.ptx_data}: corpus too short for --ptx-seq-len {cfg.ptx_seq_len}")
    return stream


def _ptx_loss(policy, stream: np.ndarray, cfg: PPOConfig, key: int) -> torch.Tensor:
    """Mean next-token cross-entropy of the policy on random corpus windows (InstructGPT's PPO-ptx term)."""
    from rlhfkit.train.lm_data import sample_windows
    from rlhfkit.train.loop import lm_loss

    windows = torch.from_numpy(sample_windows(stream, cfg.ptx_seq_len, cfg.ptx_batch_size, cfg.seed, key))
    windows = windows.long().to(next(policy.parameters()).device)
    loss_sum, count, _ = lm_loss(policy, {"input_ids": windows[:, :-1], "labels": windows[:, 1:]})
    return loss_sum / count.clamp(min=1)


def _save_outputs(
    cfg, out, policy, value_module, tokenizer, stop_ids, last, kl_ctl, norm, use_gold, base
) -> None:
    save_hf_checkpoint(policy, tokenizer, out, eos_token_ids=list(stop_ids), base=base)
    if cfg.value_model == "critic":
        # A LoRA critic is saved merged: its base (the reward model) may itself be an adapter in memory only.
        merged = (
            value_module.merge_and_unload() if hasattr(value_module, "merge_and_unload") else value_module
        )
        with saving_into(out / "value") as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
    elif cfg.value_model == "head":
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in value_module.state_dict().items()},
            str(out / "value_head.safetensors"),
        )
    metrics = {k: v for k, v in last.items() if isinstance(v, int | float) and math.isfinite(v)}
    write_manifest(
        out,
        stage=METHOD_NAMES[cfg.advantage],
        config=asdict(cfg),
        seed=cfg.seed,
        parent=cfg.policy,
        metrics=metrics,
        extra={
            "reward_model": cfg.reward or "python callable",
            "reference": cfg.ref or cfg.policy,
            "final_beta": kl_ctl.beta,
            "reward_normalization": norm,
            "gold_judge": use_gold,
        },
    )
