"""Stage 3c: PPO against a reward model with a KL leash to the SFT model — the outer loop.

`run(PPOConfig, reward_fn=None) -> Path`. One PPO step:

1. take `batch_size` prompts (a pure function of seed and step, so a resumed run sees the same prompts);
2. roll out (`roll_out`): sample one response each, score it (reward model, or `reward_fn` for tests and custom
   rewards), and compute old log-probs, reference log-probs and values (`rollout.py`);
3. update (`update.py`): turn scores into per-token rewards with the KL penalty, then GAE advantages and
   returns, whitened (`advantages.py`); `epochs` passes over shuffled minibatches of the rollout, minimizing
   `policy_loss + vf_coef * value_loss - ent_coef * entropy (+ ptx_coef * pretraining loss)` (`losses.py`),
   with gradient clipping, a NaN/inf guard per minibatch, and an early stop of the epochs when the
   approximate KL to the rollout policy explodes;
4. update beta from the measured KL (`kl_controller.py`), log a line to `metrics.jsonl`, sample now and then,
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
described in `train/precision.py` and `lora.enable_gradient_checkpointing`; `--dtype bfloat16` also runs the
training forwards under a bf16 autocast on a CPU (`update.amp`). The options are `PPOConfig` (`config.py`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from rlhfkit.artifacts import save_hf_checkpoint, write_manifest
from rlhfkit.data.chats import load_prompts
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import SamplingParams, end_of_turn_ids, pad_id, render_chat
from rlhfkit.generation.engine import check_batch_quantize
from rlhfkit.lora import (
    apply_lora,
    enable_gradient_checkpointing,
    is_peft,
    load_frozen_lm,
    load_trainable_lm,
    trainable_parameters,
)
from rlhfkit.ppo import distributed as ranks
from rlhfkit.ppo.advantages import shape_scores
from rlhfkit.ppo.audit import Audit, load_audit_prompts, trim_audits
from rlhfkit.ppo.config import METHOD_NAMES, GRPOConfig, PPOConfig, RLOOConfig, check_config
from rlhfkit.ppo.kl_controller import KLController
from rlhfkit.ppo.rm_reward import ensemble_reward_fn, reward_folders
from rlhfkit.ppo.rollout import RewardFn, Rollout, collect, critic_values, measure
from rlhfkit.ppo.stop_rule import StopRule, watch
from rlhfkit.ppo.update import Learner, amp, ptx_stream, update
from rlhfkit.ppo.verifier_reward import is_verifier, verifier_reward_fn
from rlhfkit.saving import saving_into
from rlhfkit.tokenizer import load_tokenizer
from rlhfkit.train.checkpoint import checkpoint_meta, find_checkpoint, load_checkpoint, save_checkpoint
from rlhfkit.train.distributed import DistInfo, finish_distributed, init_distributed, pick_device
from rlhfkit.train.logits import causal_lm_of
from rlhfkit.train.loop import (
    MetricsLog,
    _progress,
    epoch_batch_indices,
    last_logged,
    make_optimizer,
    set_seed,
)
from rlhfkit.train.precision import Precision

__all__ = ["GRPOConfig", "PPOConfig", "RLOOConfig", "run"]  # the stage table names the configs here


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

    init = cfg.value_init or _critic_init(reward_folders(cfg.reward)[0] if has_rm else None, base)
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


def _critic_init(reward: str | None, base: str) -> str:
    """Where the critic starts: the reward model (an ensemble's first member) when it is a causal model that reads
    the policy's tokens, else the policy itself (`base`). A reward model on another backbone (the demo's MiniLM
    encoder, `reward train --model minilm`) sees text through its own tokenizer and cannot value the policy's
    token positions."""
    if reward is None or not (Path(reward) / "config.json").exists():  # none, or an adapter: as before
        return reward or base
    # the config files as JSON: nothing of the model's own code runs to answer this
    rm_config = json.loads((Path(reward) / "config.json").read_text())
    base_config = json.loads((Path(base) / "config.json").read_text()) if Path(base).is_dir() else {}
    decoder = is_decoder_only(SimpleNamespace(model_type=rm_config.get("model_type")))
    if decoder and rm_config.get("vocab_size") == base_config.get("vocab_size", rm_config.get("vocab_size")):
        return reward
    print(f"ppo: the critic starts from the policy ({base}): the reward model {reward} has another backbone")
    return base


def is_decoder_only(config) -> bool:
    """A causal-LM family that is not also a masked (bidirectional) encoder such as BERT: its state at each
    position sees only the tokens before it, as a critic's must."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@dataclass
class Sampler:
    """What a rollout reads: the models that sample, score and measure, and the prompts they answer."""

    policy: torch.nn.Module
    ref: torch.nn.Module | None  # None: the LoRA policy with its adapters disabled
    value_fn: Callable | None  # (batch, policy hidden states) -> values; None without a value model
    reward_fn: RewardFn
    tokenizer: Any
    records: list[dict]  # the prompts file's records
    prompt_ids: list[list[int]]  # each record's rendered prompt, cut to fit
    stop_ids: list[int]
    use_gold: bool  # also score with the demo world's gold judge (logged, never trained on)
    device: torch.device
    tools: dict | None = None  # name -> tool (`world.tools`), with --max-tool-turns


def run(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> Path:
    """Train (or resume) a PPO run; return the output folder. `reward_fn` replaces the reward model."""
    check_config(cfg, reward_fn is not None)
    rm_stats: dict = {}
    if reward_fn is None and is_verifier(cfg.reward):  # before any model loads: a missing answer fails fast
        reward_fn, rm_stats = verifier_reward_fn(
            cfg.reward, cfg.prompts, cfg.process_model, pick_device(cfg.device)
        )
    if cfg.value_model == "auto":
        cfg = replace(cfg, value_model="critic" if cfg.advantage == "gae" else "none")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    info = init_distributed(device)
    ranks.check_world(cfg.batch_size, cfg.minibatch_size, cfg.loop.shard, info)
    say = print if info.is_main else (lambda *_a, **_k: None)
    audit = audit_rule = watch_rule = watch_fn = None
    if cfg.audit_prompts:  # before any model loads: bad audit prompts fail fast
        if info.world_size > 1:
            raise RlhfkitError("--audit-prompts: audits run in one process, not under torchrun")
        audit_records = load_audit_prompts(cfg.audit_prompts, cfg.audit_size)
        audit = Audit(audit_records, cfg.audit_every, cfg.loop.seed, cfg.max_new_tokens, out)
        audit_rule = StopRule(cfg.stop_patience, cfg.audit_smoothing)
    set_seed(cfg.loop.seed)
    precision = Precision.of(device, cfg.dtype)

    tokenizer = load_tokenizer(cfg.policy)
    if tokenizer.chat_template is None:
        raise RlhfkitError(
            f"{cfg.policy}: the tokenizer has no chat template; PPO needs one to render prompts"
        )
    policy, base = load_trainable_lm(cfg.policy, out, device, cfg.dtype, cfg.gradient_checkpointing, cfg.lora)
    _check_generation_quantize(cfg, policy)
    # With LoRA and no other reference, the reference is the policy with its adapters disabled (ref None).
    ref = None
    if cfg.ref or not cfg.lora.enabled:
        ref = load_frozen_lm(cfg.ref or base, device, precision.dtype)
    records = load_prompts(cfg.prompts)
    if audit is not None and Path(cfg.audit_prompts).resolve() == Path(cfg.prompts).resolve():
        records = records[cfg.audit_size :]  # audits judge answers to prompts the policy never trained on
        say(f"ppo: the first {cfg.audit_size} prompts are the audit's, held out of training")
        if not records:
            raise RlhfkitError(f"--prompts {cfg.prompts}: no prompt left to train on after the audit's")
    prompt_ids = _prompt_ids(cfg, tokenizer, records, policy)
    if audit is not None:
        audit.prompt_ids = _prompt_ids(cfg, tokenizer, audit.records, policy)
    if reward_fn is None:
        reward_fn, rm_stats = ensemble_reward_fn(
            cfg.reward,
            cfg.ensemble_penalty,
            device,
            cfg.rm_max_length,
            cfg.forward_batch_size,
            precision.dtype,
            precision.say_scorer(),
        )
    if cfg.watch_reward:  # reward models the policy never sees, watched for over-optimization
        watch_fn, _ = ensemble_reward_fn(
            cfg.watch_reward,
            0.0,
            device,
            cfg.rm_max_length,
            cfg.forward_batch_size,
            precision.dtype,
            precision.say_scorer(),
        )
        watch_rule = StopRule(0 if audit else cfg.stop_patience)  # with audits the watch score is only logged
    stop = audit_rule or watch_rule  # the rule that stops the run, if any
    use_gold = uses_gold_judge(cfg.gold_judge, records)
    value_module, value_fn = build_value(
        cfg, policy, device, has_rm=bool(cfg.reward) and not is_verifier(cfg.reward), base=base
    )
    modules = torch.nn.ModuleDict({"policy": policy, **({"value": value_module} if value_module else {})})
    learner = Learner(
        forward=ranks.training_forward(modules, value_fn, cfg.temperature, cfg.ent_coef > 0, info),
        optimizer=make_optimizer(modules, cfg.loop),
        params=[p for p in modules.parameters() if p.requires_grad],
        policy=policy,
        ptx_stream=ptx_stream(cfg, tokenizer) if cfg.ptx_coef > 0 else None,
        info=info,
    )
    stop_ids = end_of_turn_ids(tokenizer, causal_lm_of(policy))  # with every eos id of its generation config
    tools = None
    if cfg.max_tool_turns > 0:
        from rlhfkit.data.tool_calls import require_tool_template
        from rlhfkit.world.tools import WORLD_TOOLS

        require_tool_template(tokenizer, cfg.policy)
        tools = WORLD_TOOLS
    sampler = Sampler(
        policy, ref, value_fn, reward_fn, tokenizer, records, prompt_ids, stop_ids, use_gold, device, tools
    )

    kl_ctl = KLController(cfg.beta, cfg.kl_target if cfg.kl_target > 0 else None, cfg.kl_horizon)
    norm = {"mean": 0.0, "std": float(rm_stats.get("score_std", 0.0)) or None}
    if not cfg.normalize_reward:
        norm = {"mean": 0.0, "std": 1.0}
    start = 0
    ckpt = find_checkpoint(out)
    if ckpt is not None:
        ranks.check_resume_world(ckpt, checkpoint_meta(ckpt)["world_size"], info)
        start, extra = load_checkpoint(ckpt, modules, learner.optimizer)
        kl_ctl.beta = float(extra["beta"])
        norm = extra["norm"]
        if watch_rule is not None:
            watch_rule.load(extra.get("watch"))
        if audit_rule is not None:
            audit_rule.load(extra.get("audit"))
        say(f"ppo: resuming from {ckpt} at step {start}/{cfg.steps}")
    log = MetricsLog(out / "metrics.jsonl", start if ckpt is not None else None, enabled=info.is_main)
    samples_path = out / "samples.jsonl"
    if info.is_main:
        _trim_samples(samples_path, start if ckpt is not None else 0)
        if audit is not None:
            trim_audits(out, start if ckpt is not None else -1)
    if audit is not None:
        audit.prepare(ref, policy, tokenizer, stop_ids, cfg.generation_batch_size)
        if ckpt is None:  # the starting policy is audited too: the rule may keep it
            _audit(audit, audit_rule, 0, sampler, cfg, say, base)
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
            if stop is not None and stop.should_stop:  # resumed after the rule stopped it: train no further
                break
            t0 = time.perf_counter()
            lr = cfg.loop.lr * min(1.0, (step + 1) / max(cfg.loop.warmup_steps, 1))
            for group in learner.optimizer.param_groups:
                group["lr"] = lr
            rollout, gold = roll_out(cfg, sampler, step, info)

            record = {"step": step + 1}
            # The watch rule scores before the update: its snapshot is the policy that wrote these responses.
            if watch_rule is not None:
                prompts = [records[i]["messages"] for i in rollout.prompt_index]
                record.update(
                    watch(watch_rule, watch_fn, step + 1, prompts, rollout.texts, policy, rollout.raw_scores)
                )
            bad = _non_finite(rollout)
            if bad:
                say(f"step {step + 1}: {bad}; rollout batch skipped")
                record.update({"skipped": 1, "skip_reason": bad})
            else:
                if norm["std"] is None:  # first rollout of the SFT policy sets the scale
                    std = float(rollout.raw_scores.std())
                    norm = {"mean": float(rollout.raw_scores.mean()), "std": std if std > 1e-6 else 1.0}
                scores = shape_scores(
                    rollout.raw_scores,
                    rollout.finished,
                    norm["mean"],
                    norm["std"],
                    cfg.reward_clip,
                    cfg.missing_eot_penalty,
                )
                record.update(update(cfg, learner, rollout, scores, kl_ctl.beta, step))
                kl_ctl.update(record["kl"], rollout.size)
            t_end = time.perf_counter()
            record.update(_rollout_metrics(rollout, gold, t_end - t0, lr, kl_ctl.beta, t_end - t_run))
            done = step + 1
            if audit is not None and audit.due(done):  # after the update: the policy of `done` updates
                record.update(_audit(audit, audit_rule, done, sampler, cfg, say, base))
            sample_now = cfg.sample_every and (done % cfg.sample_every == 0 or done in (start + 1, cfg.steps))
            if sample_now and info.is_main:
                _write_samples(samples_path, done, rollout, records, gold, cfg.num_samples, progress.console)
            log.write(record)
            last = record
            progress.update(task, completed=done, info=_summary(record))
            stopping = stop is not None and stop.should_stop
            if (done % cfg.loop.save_every == 0 or done == cfg.steps or stopping) and info.is_main:
                extra = {"beta": kl_ctl.beta, "norm": norm}
                extra.update({k: r.state() for k, r in (("watch", watch_rule), ("audit", audit_rule)) if r})
                save_checkpoint(out, modules, learner.optimizer, done, extra, world_size=info.world_size)
            if stopping:
                signal = "audit win rate" if audit else "watch score"
                say(f"ppo: the {signal} has not improved since step {stop.best_step}; stopped at step {done}")
                break

    state = {"final_beta": kl_ctl.beta, "reward_normalization": norm}
    if stop is not None and stop.patience > 0:
        kept = stop.restore_best(policy)  # the policy of the watch score's (audit's) best step
        state["stop_rule"] = {
            "signal": "audit" if audit else "watch",
            "best_step": stop.best_step,
            "stopped_at": stop.last_step,
            "kept_step": kept,
        }
        if kept is None and stop.best_step != stop.last_step and (out / "rlhfkit.json").exists():
            # Resumed after the stop: the best step's policy was written then and is not in this process.
            say(f"ppo: stopped at step {stop.last_step} before; its outputs (step {stop.best_step}) stay")
            finish_distributed(info)
            return out
        say(f"ppo: the output is the policy of step {stop.last_step if kept is None else kept}")
    if info.is_main:
        last = last or last_logged(out / "metrics.jsonl")  # no step left to run: keep the final metrics
        _save_outputs(cfg, sampler, value_module, base, last, state)
    finish_distributed(info)
    return out


def _audit(audit: Audit, rule: StopRule, done: int, sampler: Sampler, cfg: PPOConfig, say, base: str) -> dict:
    """Audit the policy after `done` updates, feed its win rate to the stop rule; the numbers to log."""
    t0 = time.perf_counter()
    summary, labels = audit.run(
        done,
        sampler.policy,
        sampler.tokenizer,
        sampler.stop_ids,
        cfg.generation_batch_size,
        sampler.reward_fn,
    )
    ema = rule.observe(done, summary["audit_win"], sampler.policy)
    summary.update({"audit_ema": ema, "audit_best_step": rule.best_step})
    audit.write(summary, labels)
    if cfg.audit_keep:
        save_hf_checkpoint(
            sampler.policy,
            sampler.tokenizer,
            Path(cfg.out) / "audits" / f"step-{done}",
            eos_token_ids=list(sampler.stop_ids),
            base=base,
        )
    say(
        f"audit after {done} steps: the policy wins {summary['audit_win']:.1%} of {len(audit.records)} pairs "
        f"(moving average {ema:.1%}, best at step {rule.best_step}); the reward model agrees with the annotators "
        f"on {summary['audit_rm_agree']:.1%}"
    )
    return {**{k: v for k, v in summary.items() if k != "step"}, "time_audit": time.perf_counter() - t0}


def _check_generation_quantize(cfg: PPOConfig, policy: torch.nn.Module) -> None:
    """Refuse `--generation-quantize` before the first rollout where the policy cannot sample with it."""
    if cfg.generation_quantize == "none":
        return
    option = "--generation-quantize"
    if is_peft(policy):
        raise RlhfkitError(
            f"{option} {cfg.generation_quantize}: a LoRA policy samples through its own forward"
        )
    check_batch_quantize(causal_lm_of(policy), cfg.generation_quantize, option)


def _prompt_ids(cfg: PPOConfig, tokenizer, records: list[dict], policy) -> list[list[int]]:
    """Each prompt rendered with the chat template; prompts keep their end (the question) and leave room for
    the response within the policy's position limit."""
    limit = getattr(policy.config, "max_position_embeddings", None) or 10**9
    max_prompt = min(cfg.max_prompt_tokens, limit - cfg.max_new_tokens)
    if max_prompt < 8:
        raise RlhfkitError(
            f"--max-new-tokens {cfg.max_new_tokens} leaves no room for prompts in the policy's {limit} positions"
        )
    return [
        tokenizer(render_chat(tokenizer, r["messages"]), add_special_tokens=False)["input_ids"][-max_prompt:]
        for r in records
    ]


def roll_out(cfg: PPOConfig, sampler: Sampler, step: int, info: DistInfo) -> tuple[Rollout, list | None]:
    """Step `step`'s rollout, measured and gathered from every rank, and its gold scores (None: no gold judge).

    Each prompt's k = samples_per_prompt responses sit in consecutive rows; under torchrun each rank samples
    its share of the episodes with its own seed (`ppo.distributed`)."""
    k = cfg.samples_per_prompt
    idx = [
        i
        for i in epoch_batch_indices(len(sampler.records), cfg.batch_size // k, cfg.loop.seed, step)
        for _ in range(k)
    ]
    idx = ranks.episode_share(idx, info)  # this rank's episodes; the batch stays global
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        stop_token_ids=sampler.stop_ids,
        seed=ranks.rank_seed((cfg.loop.seed * 1_000_003 + step) % 2**62, info),
    )
    pad = pad_id(sampler.tokenizer)
    rollout = collect(
        sampler.policy,
        sampler.tokenizer,
        [sampler.prompt_ids[i] for i in idx],
        [sampler.records[i]["messages"] for i in idx],
        idx,
        sampler.reward_fn,
        params,
        pad_id=pad,
        device=sampler.device,
        generation_batch_size=cfg.generation_batch_size,
        tools=sampler.tools,
        max_tool_turns=cfg.max_tool_turns,
        quantize=cfg.generation_quantize,
    )
    t_gold = time.perf_counter()
    gold = gold_scores(sampler.records, idx, rollout.texts) if sampler.use_gold else None
    rollout.timings["scoring"] += time.perf_counter() - t_gold
    measure(
        rollout,
        sampler.policy,
        sampler.ref,
        sampler.value_fn,
        cfg.temperature,
        cfg.forward_batch_size,
        lambda: amp(cfg, sampler.device),
    )
    return ranks.gather_rollout(rollout, pad, info, gold)


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
    if rollout.turns is not None:
        out["tool_calls"] = float(np.mean([sum(m["role"] == "tool" for m in t) for t in rollout.turns]))
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
            if rollout.turns is not None:
                row["turns"] = rollout.turns[j]  # the calls and tool outputs before the final `response`
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    console.print(f"[dim]step {step} samples:[/dim]")
    for j in range(min(show, rollout.size)):
        user = records[rollout.prompt_index[j]]["messages"][-1]["content"]
        console.print(f"  [{float(rollout.raw_scores[j]):+.2f}] {user[:60]!r} -> {rollout.texts[j][:120]!r}")


def _save_outputs(cfg: PPOConfig, sampler: Sampler, value_module, base, last: dict, state: dict) -> None:
    """The policy (Hugging Face checkpoint, stopping at end of turn), the critic or value head, and
    `rlhfkit.json` with the final metrics and `state` (final beta, reward normalization)."""
    out = Path(cfg.out)
    save_hf_checkpoint(
        sampler.policy, sampler.tokenizer, out, eos_token_ids=list(sampler.stop_ids), base=base
    )
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
        seed=cfg.loop.seed,
        parent=cfg.policy,
        metrics=metrics,
        extra={
            "reward_model": cfg.reward or "python callable",
            "reference": cfg.ref or cfg.policy,
            **state,
            "gold_judge": sampler.use_gold,
        },
    )
