"""Stage 3b: the reward model — a scalar head on a pretrained backbone, trained on human comparisons.

`run(RewardConfig) -> Path` loads comparisons (pairs and K-way rankings), puts a one-output head on the
backbone (`AutoModelForSequenceClassification`, `num_labels=1`: an rlhfkit base/SFT checkpoint or any
Hugging Face encoder or decoder), trains it with the shared loop, shifts the scores so the policy's own
samples average 0, and writes a Hugging Face checkpoint plus `rlhfkit.json`.

Batching follows InstructGPT: one batch element is one *comparison group* — a prompt with its K completions.
Each completion is scored once, and the group's loss is the mean over all its judged pairs (C(K, 2) for a
full ranking). Feeding the pairs of a ranking as independent examples would show each completion K - 1 times
per epoch and overfit. The loop's `count` is the number of groups, so accumulation and DDP average the
same way.

With `--lora-r` the backbone trains LoRA adapters and the score head trains whole; the output is then a peft
adapter folder (`load_reward_model` merges it back for scoring) and the score offset is in `rlhfkit.json`.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlhfkit.config import require
from rlhfkit.data.comparisons import ComparisonGroup, load_comparisons
from rlhfkit.data.responses import record_responses
from rlhfkit.data.sources import read_records, record_source
from rlhfkit.errors import RlhfkitError
from rlhfkit.lora import LoraOptions, apply_lora, enable_gradient_checkpointing, resolve_base
from rlhfkit.reward.backbones import resolve_backbone
from rlhfkit.reward.evaluate import comparison_metrics, score_groups
from rlhfkit.reward.judge_mark import refuse_judge
from rlhfkit.reward.model import (
    default_max_length,
    encode,
    forward_scores,
    load_reward_model,
    pad_parts,
    scalar_head_name,
    score_ids,
    score_offset,
    shift_scores,
)
from rlhfkit.saving import saving_into
from rlhfkit.train.distributed import check_divisible, finish_distributed
from rlhfkit.train.dropout import disable_dropout
from rlhfkit.train.loop import FineTuneLoopConfig, group_batches
from rlhfkit.train.precision import Precision
from rlhfkit.train.stage import start_stage, train_and_export


@dataclass
class RewardLoopConfig(FineTuneLoopConfig):
    """The shared loop's settings with defaults suited to fine-tuning a pretrained backbone."""

    lr: float = 5e-5
    warmup_steps: int = 10


@dataclass
class RewardConfig:
    model: str = ""  # backbone: a model folder (SFT checkpoint, encoder, decoder) or minilm (bundled)
    data: str = ""  # comparisons JSONL (pairs and/or rankings)
    out: str = "runs/rm"  # output folder (a Hugging Face sequence classifier plus rlhfkit.json)
    eval_data: str | None = None  # held-out comparisons, evaluated every eval_every steps and at the end
    calibration: str | None = None  # candidates/chats/comparisons whose responses should score 0 on average
    calibration_samples: int = 512  # responses (a seeded sample) used to estimate the mean score; 0: all
    max_length: int = 512  # tokens per prompt+response; longer ones lose their beginning
    batch_size: int = 16  # comparison groups (a pair or a whole ranking) per optimizer step
    micro_batch_size: int = 8  # groups per forward pass; batch_size / micro_batch_size = accumulation
    epochs: float = 1.0  # passes over the data; sets max_steps (a --max-steps given alone runs exactly that)
    freeze_layers: int = (
        0  # keep the embeddings and the lowest N transformer layers fixed (faster, less overfit)
    )
    dropout: bool = False  # keep the backbone's dropout while training (off by default: train/dropout.py)
    device: str = "auto"  # auto (CUDA when available), cpu or cuda
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; trained weights stay fp32 under a CUDA autocast, a LoRA run's frozen base is loaded in it
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory,
    # about a third slower
    lora: LoraOptions = field(default_factory=LoraOptions)  # with LoRA the score head still trains whole
    loop: RewardLoopConfig = field(default_factory=RewardLoopConfig)


def preference_loss(diff: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Per-pair loss for score differences `diff = r_a - r_b`.

    Bradley-Terry models P(a preferred over b) = sigmoid(r_a - r_b). Against a target probability p:

        L = -[ p * log sigmoid(d - m) + (1 - p) * log sigmoid(-(d - m)) ]

    p = 1 gives the classic loss -log sigmoid(r_chosen - r_rejected - margin) (margin as in Llama 2);
    p = 0.5 (a tie) is minimized at d = 0, pulling tied responses together; a soft label p (e.g. an AI
    labeler's probability) is minimized where sigmoid(d) = p.
    """
    z = diff - margin
    return -(target * F.logsigmoid(z) + (1 - target) * F.logsigmoid(-z))


def collate_groups(
    groups: list[ComparisonGroup], encoded: list[list[list[int]]], idx: list[int], pad_id: int, device
) -> dict:
    """A micro-batch: every completion of the chosen groups once, plus index tensors for all their pairs."""
    rows: list[list[int]] = []
    better, worse, target, margin, weight = [], [], [], [], []
    for gi in idx:
        base = len(rows)
        rows.extend(encoded[gi])
        pairs = groups[gi].pairs
        for p in pairs:
            better.append(base + p.better)
            worse.append(base + p.worse)
            target.append(p.target)
            margin.append(p.margin)
            weight.append(1.0 / len(pairs))  # each group counts once, whatever its number of pairs
    batch = pad_parts(rows, pad_id, device)
    batch.update(
        better=torch.tensor(better, device=device),
        worse=torch.tensor(worse, device=device),
        target=torch.tensor(target, dtype=torch.float32, device=device),
        margin=torch.tensor(margin, dtype=torch.float32, device=device),
        weight=torch.tensor(weight, dtype=torch.float32, device=device),
        count=len(idx),
    )
    return batch


def reward_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Summed group losses (each the mean over its pairs), the group count, and the batch's pair accuracy."""
    scores = forward_scores(model, batch).float()  # under a bf16 autocast the head's output is bf16
    diff = scores[batch["better"]] - scores[batch["worse"]]
    loss_sum = (preference_loss(diff, batch["target"], batch["margin"]) * batch["weight"]).sum()
    decisive = batch["target"] != 0.5
    with torch.no_grad():
        agree = ((diff > 0) == (batch["target"] > 0.5)).float()[decisive]
        accuracy = float(agree.mean()) if agree.numel() else float("nan")
    return loss_sum, torch.tensor(float(batch["count"])), {"accuracy": accuracy}


def freeze_lower_layers(model, n: int) -> int:
    """Stop training the embeddings and the first `n` transformer blocks; return the trainable parameter count.

    The blocks are found as the model's ModuleList of `num_hidden_layers` entries, which covers Llama
    (`model.layers`), BERT (`encoder.layer`) and most Hugging Face architectures.
    """
    if n > 0:
        depth = getattr(model.config, "num_hidden_layers", None)
        blocks = next(
            (m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth), None
        )
        if blocks is None:
            raise RlhfkitError("--freeze-layers: could not find the model's list of transformer layers")
        if n > len(blocks):
            raise RlhfkitError(f"--freeze-layers {n}: the model has only {len(blocks)} layers")
        frozen = {id(p) for block in blocks[:n] for p in block.parameters()}
        for name, p in model.named_parameters():
            if id(p) in frozen or "embed" in name:
                p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cpu_training_attention(device: torch.device, bf16: bool):
    """The attention kernel for training an encoder reward model (BERT, MiniLM: the model's own SDPA call).

    Under a CPU bf16 autocast, SDPA's fused (flash) kernel is slow in the backward pass: with dropout off it
    took 27% of a MiniLM training step, and the unfused math kernel made the step 1.1-1.2x faster (AMD EPYC
    Zen 4, 2 cores; docs/methods.md, "Reward models train without dropout"). In fp32 the two took the same
    time, and scoring (no backward) keeps the fused kernel, which is faster there."""
    if device.type == "cpu" and bf16:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return lambda: sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext


def load_calibration_items(path: str | Path) -> list[tuple[list[dict], list[dict]]]:
    """Every (prompt, response) of a candidates, comparisons or chats file (see `data.responses`)."""
    src = record_source(path)
    items = [item for line, rec in read_records(src) for item in record_responses(rec, src, line)[0]]
    if not items:
        raise RlhfkitError(f"{path}: no responses to calibrate on (empty file)")
    return items


def _unique_responses(groups: list[ComparisonGroup]) -> list[tuple[list[dict], list[dict]]]:
    seen, items = set(), []
    for g in groups:
        for c in g.completions:
            key = json.dumps([g.prompt, c], sort_keys=True)
            if key not in seen:
                seen.add(key)
                items.append((g.prompt, c))
    return items


def file_fingerprint(path: str | Path) -> str:
    return record_source(path).fingerprint()  # a file's bytes; a `datasets` folder or Hub dataset's records


def run(cfg: RewardConfig) -> Path:
    require(
        cfg, model="a Hugging Face model folder to put the reward head on", data="a comparisons JSONL file"
    )
    refuse_judge(cfg.model, "--model")  # a reward model grown from the judge would carry it into training
    stage = start_stage("reward", cfg)
    out, device, info = stage.out, stage.device, stage.info
    groups = load_comparisons(cfg.data)
    eval_groups = load_comparisons(cfg.eval_data) if cfg.eval_data else []
    calibration_items = (
        load_calibration_items(cfg.calibration) if cfg.calibration else _unique_responses(groups)
    )

    if cfg.lora.enabled and cfg.freeze_layers:
        raise RlhfkitError(
            "--freeze-layers and --lora-r: LoRA already freezes the backbone; give one of them"
        )
    precision = Precision.of(device, cfg.dtype)
    bf16 = not cfg.lora.enabled and precision.say_scorer()  # a LoRA run's bf16 base has its own path
    source = resolve_backbone(cfg.model)  # `minilm`: the bundled encoder (reward.backbones)
    base = resolve_base(source, out)
    model, tokenizer = load_reward_model(
        base, device, new_head=True, dtype=precision.trainable_load_dtype(cfg.lora.enabled)
    )
    max_length = default_max_length(model, tokenizer, cfg.max_length)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, head=scalar_head_name(model))
    trainable = freeze_lower_layers(model, cfg.freeze_layers)
    if not cfg.dropout:
        disable_dropout(model)

    attention = cpu_training_attention(device, bf16)

    def loss_fn(m, batch: dict):
        with precision.autocast(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), attention():
            return reward_loss(m, batch)

    encoded = [[encode(tokenizer, g.prompt, c, max_length) for c in g.completions] for g in groups]
    check_divisible("--batch-size", cfg.batch_size, info, "comparisons")
    if cfg.epochs > 0:
        cfg.loop.max_steps = max(1, math.ceil(cfg.epochs * len(groups) / cfg.batch_size))
    pairs = sum(len(g.pairs) for g in groups)
    if info.is_main:
        print(
            f"reward: {len(groups)} comparisons ({pairs} judged pairs), {cfg.loop.max_steps} steps of "
            f"{cfg.batch_size} comparisons, max_length {max_length}, {trainable:,} trainable parameters, device {device}"
        )

    get_batch = group_batches(
        len(groups),
        cfg,
        info,
        length=lambda gi: max(len(r) for r in encoded[gi]),
        collate=lambda idx: collate_groups(groups, encoded, idx, tokenizer.pad_token_id, device),
    )

    latest: dict = {}  # the last evaluation's scores, reused for the final report (shifted) when current

    def evaluate(m) -> dict:
        latest["scores"] = score_groups(m, tokenizer, eval_groups, max_length, bf16=bf16)
        metrics = comparison_metrics(eval_groups, latest["scores"])
        return {"val_accuracy": metrics["accuracy"], "val_loss": metrics["loss"], "val_ece": metrics["ece"]}

    model, metrics = train_and_export(
        stage, model, get_batch, loss_fn, evaluate=evaluate if eval_groups else None, items_name="cmp"
    )
    if not info.is_main:
        finish_distributed(info)  # waits for rank 0's calibration and save, then leaves the group
        return out

    # Shift so the policy's own responses average 0: rewards then read as "better/worse than usual".
    if 0 < cfg.calibration_samples < len(calibration_items):
        keep = np.random.default_rng(cfg.loop.seed).choice(
            len(calibration_items), cfg.calibration_samples, replace=False
        )
        calibration_items = [calibration_items[i] for i in sorted(keep)]
    calib = score_ids(
        model, tokenizer, [encode(tokenizer, p, r, max_length) for p, r in calibration_items], bf16=bf16
    )
    mean, std = float(np.mean(calib)), float(np.std(calib))
    shift_scores(model, mean)
    calibration = {
        "mean_before_shift": mean,
        "std": std,
        "responses": len(calib),
        "source": cfg.calibration or cfg.data,
    }

    metrics.update({"comparisons": len(groups), "pairs": pairs, "score_mean": mean, "score_std": std})
    if eval_groups:
        if "scores" in latest:  # evaluated at the last step: the same scores, shifted
            scores = [[x - mean for x in group] for group in latest["scores"]]
        else:
            scores = score_groups(model, tokenizer, eval_groups, max_length, bf16=bf16)
        report = comparison_metrics(eval_groups, scores)
        (out / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        metrics.update(
            {"val_accuracy": report["accuracy"], "val_loss": report["loss"], "val_ece": report["ece"]}
        )
    with saving_into(out) as tmp:
        if cfg.lora.enabled:  # an adapter folder: the score offset cannot go in a config.json: rlhfkit.json
            from rlhfkit.lora import save_adapter

            save_adapter(model, tmp, base)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    stage.record(
        parent=source,
        data_fingerprint=file_fingerprint(cfg.data),
        metrics=metrics,
        extra={"calibration": calibration, "max_length": max_length, "score_offset": score_offset(model)},
    )
    finish_distributed(info)
    return out
