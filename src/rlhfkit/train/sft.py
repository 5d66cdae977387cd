"""Stage 2: supervised fine-tuning — demonstrations teach the base model the format and intent of help.

`run(SFTConfig) -> Path` reads chats (`{"messages": [...]}`), renders them with the tokenizer's chat template
and trains with the loss on **assistant tokens only** (system and user tokens are context, not targets).
Batches are length-bucketed (chats of similar length share a batch) so little compute goes to padding, and
each step's batch is a pure function of (seed, step), so the shared loop can resume it exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhfkit.artifacts import read_manifest, save_hf_checkpoint
from rlhfkit.config import require
from rlhfkit.data.chats import load_chats
from rlhfkit.lora import LoraOptions, generation_backend, load_trainable_lm
from rlhfkit.tokenizer import load_tokenizer
from rlhfkit.train.chat_tokens import IGNORE, tokenize_chats
from rlhfkit.train.distributed import check_divisible, finish_distributed, shard_range
from rlhfkit.train.lm_data import corpus_fingerprint
from rlhfkit.train.logits import causal_lm_of
from rlhfkit.train.loop import LoopConfig, lm_loss
from rlhfkit.train.precision import Precision
from rlhfkit.train.stage import start_stage, train_and_export


@dataclass
class SFTConfig:
    model: str = (
        ""  # base model: HF folder, .gguf file, Hub name or LoRA adapter folder (merged, see lora.py)
    )
    data: str = ""  # chats JSONL
    val_data: str | None = None  # held-out chats; default: `val_fraction` of `data`
    out: str = "runs/sft"  # output folder (a Hugging Face checkpoint plus rlhfkit.json)
    tokenizer: str | None = None  # default: the tokenizer saved with the model
    max_len: int = 256  # tokens per chat; longer chats are cut
    batch_size: int = 32  # chats per optimizer step (global)
    micro_batch_size: int = 32  # chats per forward pass; batch_size / micro_batch_size = accumulation
    epochs: float = 2.0  # passes over the data; sets max_steps (a --max-steps given alone runs exactly that)
    val_fraction: float = 0.05  # share of data held out when no val_data is given
    max_val_chats: int = 256  # held-out chats evaluated at most
    sample_every_eval: int = 3  # sample responses to held-out prompts this many at each evaluation
    device: str = "auto"  # auto (CUDA when available), cpu or cuda
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; trained weights stay fp32 under a CUDA autocast, a LoRA run's frozen base is loaded in it
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory,
    # about a third slower
    lora: LoraOptions = field(default_factory=LoraOptions)
    # Its own lr. (Until 2026-12-05 this also set warmup 20 and no weight decay, but the config builder ignored
    # nested defaults: every SFT run had LoopConfig's warmup and decay, and the CLI its lr 1e-3. The builder
    # honours them now; the warmup and decay stay what every measured run used.)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=5e-4))


def run(cfg: SFTConfig) -> Path:
    require(cfg, model="a base checkpoint folder", data="a chats JSONL file")
    stage = start_stage("sft", cfg)
    out, device, info = stage.out, stage.device, stage.info
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    model, base = load_trainable_lm(cfg.model, out, device, cfg.dtype, cfg.gradient_checkpointing, cfg.lora)
    precision = Precision.of(device, cfg.dtype)

    def loss_fn(m, batch: dict):
        with precision.autocast():
            return lm_loss(m, batch)

    chats = load_chats(cfg.data, require_assistant=True)
    if cfg.val_data:
        val_chats = load_chats(cfg.val_data, require_assistant=True)
    else:
        order = list(range(len(chats)))
        random.Random(0).shuffle(order)
        n_val = min(cfg.max_val_chats, max(1, int(len(chats) * cfg.val_fraction))) if len(chats) > 1 else 0
        val_chats = [chats[i] for i in order[:n_val]]
        chats = [chats[i] for i in sorted(order[n_val:])]
    train = tokenize_chats(tokenizer, chats, cfg.max_len, cfg.data)
    val = (
        tokenize_chats(tokenizer, val_chats[: cfg.max_val_chats], cfg.max_len, cfg.val_data or cfg.data)
        if val_chats
        else []
    )

    batches = _bucketed_batches(train, cfg.batch_size, cfg.loop.seed)
    loop_cfg = cfg.loop
    if cfg.epochs > 0:
        loop_cfg = LoopConfig(**{**vars(cfg.loop), "max_steps": max(1, math.ceil(cfg.epochs * len(batches)))})
    if info.is_main:
        n_tok = sum(len(ids) for ids, _ in train)
        print(
            f"sft: {len(train):,} train chats ({n_tok:,} tokens), {len(val):,} validation chats, "
            f"{len(batches)} batches/epoch, {loop_cfg.max_steps} steps"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    check_divisible("--batch-size", cfg.batch_size, info, "chats")

    def get_batch(step: int, rank: int, world: int) -> list[dict]:
        epoch, index = divmod(step, len(batches))
        order = list(range(len(batches)))
        random.Random(cfg.loop.seed * 100003 + epoch).shuffle(order)
        examples = [train[i] for i in batches[order[index]]]
        # An epoch's last batch may be short: split what there is; a rank left without chats runs one with
        # no loss tokens so that it still joins DDP's gradient all-reduce.
        mine = [examples[i] for i in shard_range(len(examples), info)]
        mine = mine or [(examples[0][0], [IGNORE] * len(examples[0][1]))]
        micro = max(1, cfg.micro_batch_size)
        return [collate(mine[i : i + micro], pad, device) for i in range(0, len(mine), micro)]

    val_batches = [
        collate(val[i : i + cfg.micro_batch_size], pad, device)
        for i in range(0, len(val), cfg.micro_batch_size)
    ]
    sample_chats = [_prompt_of(c["messages"]) for c in val_chats[: cfg.sample_every_eval]]

    def evaluate(m) -> dict:
        if not val_batches:
            return {}
        total, count = 0.0, 0
        for b in val_batches:
            loss_sum, n, _ = loss_fn(m, b)
            total += float(loss_sum)
            count += int(n)
        return {"val_loss": total / max(count, 1)}

    def sample(m) -> list[str]:
        from rlhfkit.generation import SamplingParams, generate_chat

        params = SamplingParams(max_new_tokens=64, temperature=0.0)
        if not sample_chats:
            return []
        # The lean decoder reads plain Llama weights: a LoRA model samples through its own forward.
        outs = generate_chat(causal_lm_of(m), tokenizer, sample_chats, params, backend=generation_backend(m))
        return [f"{c[-1]['content'][:60]!r} -> {o.text!r}" for c, o in zip(sample_chats, outs)]

    model, metrics = train_and_export(
        stage, model, get_batch, loss_fn, loop=loop_cfg, evaluate=evaluate, sample=sample, items_name="tok"
    )
    if info.is_main:
        save_hf_checkpoint(model, tokenizer, out, eos_token_ids=list(_eos_ids(tokenizer)), base=base)
        stage.record(
            parent=cfg.model,
            data_fingerprint=corpus_fingerprint(cfg.data),
            metrics=metrics,
            extra={"parent_stage": read_manifest(cfg.model).get("stage")},
        )
    finish_distributed(info)
    return out


def _eos_ids(tokenizer) -> tuple[int, ...]:
    from rlhfkit.generation.text import end_of_turn_ids

    return end_of_turn_ids(tokenizer)


def _prompt_of(messages: list[dict]) -> list[dict]:
    """The chat up to (not including) its last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


def _bucketed_batches(examples: list, batch_size: int, seed: int) -> list[list[int]]:
    """Group example indices into batches of similar length (sorted within large random buckets)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    bucket = batch_size * 50
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: len(examples[i][0]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return batches


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict:
    """Right-pad to the longest example; padded positions are masked out of attention and loss.

    Labels are shifted here (position t predicts token t+1) so `lm_loss` sees aligned inputs and targets.
    """
    width = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, (ids, labels) in enumerate(examples):
        n = len(ids) - 1
        x[r, :n] = torch.tensor(ids[:-1])
        y[r, :n] = torch.tensor(labels[1:])
        mask[r, :n] = 1
    return {
        "input_ids": x.to(device),
        "attention_mask": mask.to(device),
        "labels": y.to(device),
        "count": int((y != IGNORE).sum()),
    }
