"""Stage 3 (alternative to reward model + PPO): Direct Preference Optimization on comparisons.

`run(DPOConfig) -> Path` trains a policy straight from human (or AI) comparisons, with no reward model and no
sampling: the KL-regularized RLHF objective has a closed-form optimum whose implied reward is
beta * log(pi / pi_ref), so fitting that implicit reward to the comparisons with a Bradley-Terry loss trains
the policy itself (the math is in `dpo/losses.py`). IPO's squared loss is the alternative (`loss = "ipo"`).

Steps:
1. load comparisons (TRL pairs, with hard, tie or soft `label`s, and K-way rankings, expanded into their
   C(K, 2) pairs; `data.comparisons`) and tokenize each completion once with the chat template (`dpo/data.py`);
2. compute the frozen reference's sequence log-probs once, before training, and cache them in the output
   folder (`dpo/logprobs.py`); with the default reference (the starting policy) no second model is loaded;
3. train with the shared loop (warmup, cosine, clipping, checkpoints, exact resume, DDP): one batch element is
   a comparison group, its loss the mean over its pairs; batches are a pure function of (seed, step);
4. evaluate held-out comparisons (loss and implicit-reward accuracy) every `eval_every` steps and at the end;
5. write the policy as a Hugging Face checkpoint with `rlhfkit.json`.

Logged per step: loss, reward_accuracy (pairs whose implicit reward beta * (log pi - log pi_ref) orders them as
judged), reward_chosen / reward_rejected (mean implicit rewards of each side) and reward_margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhfkit.artifacts import read_manifest, save_hf_checkpoint
from rlhfkit.config import require, require_at_least
from rlhfkit.data.comparisons import load_comparisons
from rlhfkit.dpo.data import TokenGroup, collate_groups, encode_groups, pair_index
from rlhfkit.dpo.logprobs import (
    cached_reference,
    group_logprobs,
    model_fingerprint,
    rows_fingerprint,
    sequence_logprobs,
)
from rlhfkit.dpo.losses import LOSSES, dpo_loss, reward_stats
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.text import end_of_turn_ids, pad_id
from rlhfkit.lora import LoraOptions, load_frozen_lm, load_trainable_lm
from rlhfkit.reward.model import default_max_length
from rlhfkit.reward.train import file_fingerprint
from rlhfkit.tokenizer import load_tokenizer
from rlhfkit.train.chat_tokens import IGNORE
from rlhfkit.train.distributed import check_divisible, finish_distributed
from rlhfkit.train.dropout import disable_dropout
from rlhfkit.train.logits import causal_lm_of
from rlhfkit.train.loop import FineTuneLoopConfig, group_batches
from rlhfkit.train.precision import Precision
from rlhfkit.train.stage import start_stage, train_and_export


@dataclass
class DPOLoopConfig(FineTuneLoopConfig):
    """The shared loop's settings for DPO: a short warmup, then a nearly constant small learning rate.

    DPO moves a policy that already works (SFT); the paper uses a constant rate after warmup. Tiny demo models
    tolerate more than the 5e-7 of 7B models.
    """

    lr: float = 1e-4
    min_lr_ratio: float = 0.5
    warmup_steps: int = 5


@dataclass
class DPOConfig:
    policy: str = ""  # starting policy: an SFT checkpoint folder (any HF causal LM with a chat template)
    data: str = ""  # comparisons JSONL: TRL pairs (hard, tie or soft `label`) and/or K-way rankings
    eval_data: str | None = None  # held-out comparisons, evaluated every eval_every steps and at the end
    out: str = (
        "runs/dpo"  # output folder (checkpoint, metrics.jsonl, cached reference log-probs, rlhfkit.json)
    )
    ref: str | None = None  # frozen reference policy (default: the starting policy itself)
    beta: float = 0.1  # strength of the KL leash: implicit reward = beta * log(pi / pi_ref)
    loss: str = "sigmoid"  # "sigmoid" (DPO, Bradley-Terry) or "ipo" (squared loss to a finite target)
    label_smoothing: float = 0.0  # cDPO: the probability a label is flipped; target p -> p(1-eps) + (1-p)eps
    sft_coef: float = 0.0  # RPO: weight of the chosen responses' per-token SFT loss added to each pair's loss
    max_length: int = 512  # tokens per prompt+response (capped by the model); longer rows lose their tail
    batch_size: int = 16  # comparison groups (a pair or a whole ranking) per optimizer step
    micro_batch_size: int = 8  # groups per forward pass; batch_size / micro_batch_size = accumulation
    forward_batch_size: int = 32  # rows per no-grad forward (reference log-probs, evaluation)
    epochs: float = 1.0  # passes over the data; sets max_steps (0: use --max-steps as given)
    device: str = "auto"  # auto (CUDA when available), cpu or cuda
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; trained weights stay fp32 under a CUDA autocast; a separate reference and a LoRA run's base
    # are loaded in it
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory,
    # about a third slower
    dropout: bool = False  # keep the policy's dropout while training (off by default: train/dropout.py)
    lora: LoraOptions = field(default_factory=LoraOptions)
    loop: DPOLoopConfig = field(default_factory=DPOLoopConfig)


def _check(cfg: DPOConfig) -> None:
    require(cfg, policy="the SFT checkpoint folder to start from", data="a comparisons JSONL file")
    if not cfg.beta > 0:
        raise RlhfkitError(f"--beta: expected a number > 0, got {cfg.beta}")
    if cfg.loss not in LOSSES:
        raise RlhfkitError(f"--loss: expected one of {', '.join(LOSSES)}, got '{cfg.loss}'")
    if not 0 <= cfg.label_smoothing < 0.5:
        raise RlhfkitError(f"--label-smoothing: expected a number in [0, 0.5), got {cfg.label_smoothing}")
    require_at_least(cfg, 1, "batch_size", "micro_batch_size", "forward_batch_size")


def batch_loss(model, batch: dict, cfg: DPOConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Summed group losses (each the mean over its pairs), the group count, and the implicit-reward stats."""
    logps = sequence_logprobs(model, batch)
    ref = batch["ref_logps"]
    b, w = batch["better"], batch["worse"]
    losses, chosen, rejected = dpo_loss(
        logps[b], logps[w], ref[b], ref[w], batch["target"], cfg.beta, cfg.loss, cfg.label_smoothing
    )
    losses = losses + cfg.sft_coef * chosen_nll(logps, batch)[b]
    loss_sum = (losses * batch["weight"]).sum()
    return loss_sum, torch.tensor(float(batch["count"])), reward_stats(chosen, rejected, batch["target"])


def chosen_nll(logps: torch.Tensor, batch: dict) -> torch.Tensor:
    """[rows] per-token negative log-likelihood of each row's completion (for the `sft_coef` term).

    DPO only moves the *difference* of log-ratios, so on a small model both the chosen and the rejected
    log-probs often fall together and the policy drifts off its SFT distribution ("likelihood displacement").
    Adding the chosen responses' SFT loss (RPO, Pang et al. 2024) keeps the preferred answers likely.
    """
    tokens = (batch["labels"] != IGNORE).sum(-1).clamp(min=1)
    return -logps / tokens


def evaluate_groups(
    policy: torch.Tensor, ref: torch.Tensor, groups: list[TokenGroup], cfg: DPOConfig
) -> dict:
    """Held-out loss (mean over groups of their mean pair loss) and implicit-reward accuracy, from log-prob tables."""
    pairs = pair_index(groups, list(range(len(groups))))
    g, b, w = pairs["group"], pairs["better"], pairs["worse"]
    with torch.no_grad():
        losses, chosen, rejected = dpo_loss(
            policy[g, b],
            policy[g, w],
            ref[g, b],
            ref[g, w],
            pairs["target"],
            cfg.beta,
            cfg.loss,
            cfg.label_smoothing,
        )
    stats = reward_stats(chosen, rejected, pairs["target"])
    out = {"val_loss": float((losses * pairs["weight"]).sum()) / len(groups)}
    if "reward_accuracy" in stats:
        out["val_accuracy"] = stats["reward_accuracy"]
    out["val_reward_margin"] = stats["reward_margin"]
    return out


def _final_metrics(trained: dict, out: Path) -> dict:
    """The loop's final metrics (`train_and_export`).

    A re-run of a finished run trains nothing; when it also finds nothing logged in `metrics.jsonl` (no `step`
    to report), keep what the finished run recorded in its `rlhfkit.json` instead of wiping it.
    """
    if "step" in trained:
        return trained
    return read_manifest(out).get("metrics") or {}


def _eos_ids(model, tokenizer) -> list[int]:
    """End-of-turn ids of the tokenizer plus those of the policy's generation config (kept when saving)."""
    return list(end_of_turn_ids(tokenizer, causal_lm_of(model)))


def run(cfg: DPOConfig) -> Path:
    _check(cfg)
    stage = start_stage("dpo", cfg)
    out, device, info = stage.out, stage.device, stage.info
    log = print if info.is_main else (lambda *_: None)

    tokenizer = load_tokenizer(cfg.policy)
    model, base = load_trainable_lm(cfg.policy, out, device, cfg.dtype, cfg.gradient_checkpointing, cfg.lora)
    if not cfg.dropout:
        disable_dropout(model)
    precision = Precision.of(device, cfg.dtype)
    max_length = default_max_length(model, tokenizer, cfg.max_length)
    groups = encode_groups(tokenizer, load_comparisons(cfg.data), max_length, cfg.data, log)
    eval_groups = (
        encode_groups(tokenizer, load_comparisons(cfg.eval_data), max_length, cfg.eval_data, log)
        if cfg.eval_data
        else []
    )
    check_divisible("--batch-size", cfg.batch_size, info, "comparisons")
    if cfg.epochs > 0:
        cfg.loop.max_steps = max(1, math.ceil(cfg.epochs * len(groups) / cfg.batch_size))
    pad = pad_id(tokenizer)

    # The reference's log-probs, once. With the default reference (the starting policy) the model about to be
    # trained computes them: this runs before the loop loads any checkpoint, so it still holds the start weights.
    ref_path = cfg.ref or cfg.policy
    same = Path(ref_path).resolve() == Path(cfg.policy).resolve()
    eval_key = rows_fingerprint(eval_groups) if eval_groups else "none"
    fingerprint = f"{rows_fingerprint(groups)}-{eval_key}-{model_fingerprint(ref_path)}"

    def compute_reference() -> dict[str, torch.Tensor]:
        # A LoRA policy's adapters start at zero, so it still computes the starting policy here.
        ref = model if same else load_frozen_lm(ref_path, device, precision.dtype)  # freed when this returns
        bar = "dpo: reference log-probs" if info.is_main else None
        tables = {"train": group_logprobs(ref, groups, pad, device, cfg.forward_batch_size, bar)}
        if eval_groups:
            tables["eval"] = group_logprobs(ref, eval_groups, pad, device, cfg.forward_batch_size)
        return tables

    tables = cached_reference(out, fingerprint, compute_reference, write=info.is_main, log=log)
    ref_train, ref_eval = tables["train"], tables.get("eval")

    pairs = sum(len(g.pairs) for g in groups)
    log(
        f"dpo: {len(groups)} comparisons ({pairs} pairs), {cfg.loop.max_steps} steps of {cfg.batch_size} "
        f"comparisons, loss {cfg.loss}, beta {cfg.beta}, max_length {max_length}, device {device}"
    )
    get_batch = group_batches(
        len(groups),
        cfg,
        info,
        length=lambda gi: max(len(r[0]) for r in groups[gi].rows),
        collate=lambda idx: collate_groups(groups, idx, ref_train, pad, device),
    )

    def evaluate(m) -> dict:
        policy = group_logprobs(m, eval_groups, pad, device, cfg.forward_batch_size)
        return evaluate_groups(policy, ref_eval, eval_groups, cfg)

    def loss_fn(m, batch: dict):
        with precision.autocast():
            return batch_loss(m, batch, cfg)

    model, trained = train_and_export(
        stage, model, get_batch, loss_fn, evaluate=evaluate if eval_groups else None, items_name="cmp"
    )
    if info.is_main:
        metrics = {**_final_metrics(trained, out), "comparisons": len(groups), "pairs": pairs}
        save_hf_checkpoint(model, tokenizer, out, eos_token_ids=_eos_ids(model, tokenizer), base=base)
        stage.record(
            parent=cfg.policy,
            data_fingerprint=file_fingerprint(cfg.data),
            metrics=metrics,
            extra={
                "ref": ref_path,
                "max_length": max_length,
                "parent_stage": read_manifest(cfg.policy).get("stage"),
            },
        )
    finish_distributed(info)
    return out
