"""Stage 1: pretraining — next-token prediction on raw text gives a *base model* (a text completer).

`run(PretrainConfig) -> Path` tokenizes the corpus into a packed stream (cached), builds a preset model (or
continues from an existing Hugging Face checkpoint), trains it with the shared loop, and writes a Hugging Face
checkpoint plus `rlhfkit.json`. Validation loss is also reported in bits per byte, which does not depend on
the tokenizer, so runs with different vocabularies (or nanoGPT's character model) compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlhfkit.artifacts import save_hf_checkpoint
from rlhfkit.config import require
from rlhfkit.errors import RlhfkitError
from rlhfkit.lora import enable_gradient_checkpointing
from rlhfkit.models import build_model, count_parameters, load_causal_lm
from rlhfkit.tokenizer import END_OF_TURN, ENDOFTEXT, load_tokenizer
from rlhfkit.train.distributed import check_divisible, finish_distributed
from rlhfkit.train.lm_data import build_streams, eval_windows, sample_windows
from rlhfkit.train.loop import LoopConfig, lm_loss
from rlhfkit.train.precision import Precision
from rlhfkit.train.stage import start_stage, train_and_export


@dataclass
class PretrainConfig:
    data: str = ""  # .txt/.jsonl file or folder of them
    tokenizer: str = ""  # tokenizer folder (from `rlhfkit tokenizer train`)
    out: str = "runs/pretrain"  # output folder (a Hugging Face checkpoint plus rlhfkit.json)
    preset: str = "small"  # model size: micro, tiny, small, medium
    init_from: str | None = None  # continue pretraining an existing HF checkpoint instead of a fresh preset
    seq_len: int = 256  # tokens per training window
    batch_size: int = 32  # sequences per optimizer step (global, across ranks and accumulation)
    micro_batch_size: int = 32  # sequences per forward pass; batch_size / micro_batch_size = accumulation
    val_fraction: float = 0.1  # share of the token stream held out for validation
    eval_tokens: int = 65536  # validation tokens per evaluation (fixed windows)
    sample_prompts: list[str] = field(default_factory=list)  # defaults to starts of validation documents
    sample_tokens: int = 48  # tokens sampled per prompt at each evaluation
    device: str = "auto"  # auto (CUDA when available), cpu or cuda
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; weights stay fp32 and CUDA forwards run under autocast (a CPU computes in fp32)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory,
    # about a third slower
    compile: bool = False  # torch.compile the model (pays a one-off compile for faster steps)
    loop: LoopConfig = field(default_factory=LoopConfig)


def run(cfg: PretrainConfig) -> Path:
    require(cfg, data="a .txt/.jsonl file or folder", tokenizer="a folder from `rlhfkit tokenizer train`")
    stage = start_stage("pretrain", cfg)
    out, device, info = stage.out, stage.device, stage.info
    tokenizer = load_tokenizer(cfg.tokenizer)
    check_divisible("--batch-size", cfg.batch_size, info, "sequences")

    streams = build_streams(cfg.data, tokenizer, cfg.val_fraction, out / "data_cache", cfg.tokenizer)
    if len(streams.train) < cfg.seq_len + 2:
        raise RlhfkitError(
            f"{cfg.data}: only {len(streams.train)} training tokens, fewer than one sequence of {cfg.seq_len + 1}; "
            "use more text or a smaller --seq-len"
        )
    if cfg.init_from:
        model = load_causal_lm(cfg.init_from)
        if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
            raise RlhfkitError(
                f"{cfg.init_from}: model vocabulary is smaller than the tokenizer's ({len(tokenizer)})"
            )
    else:
        model = build_model(cfg.preset, len(tokenizer), max(cfg.seq_len, 512), tokenizer, seed=cfg.loop.seed)
    model.to(device)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    precision = Precision.of(device, cfg.dtype)

    def loss_fn(m, batch: dict):
        with precision.autocast():
            return lm_loss(m, batch)

    n_params = count_parameters(model)
    if info.is_main:
        print(
            f"pretrain: {n_params:,} parameters, {len(streams.train):,} train / {len(streams.val):,} val tokens "
            f"({streams.num_documents} documents), device {device}, {info.world_size} process(es)"
        )

    per_rank = cfg.batch_size // info.world_size
    micro = min(cfg.micro_batch_size, per_rank)

    def get_batch(step: int, rank: int, world: int) -> list[dict]:
        windows = sample_windows(streams.train, cfg.seq_len, cfg.batch_size, cfg.loop.seed, step)
        mine = torch.from_numpy(windows[rank * per_rank : (rank + 1) * per_rank].astype(np.int64))
        return [_lm_batch(mine[i : i + micro], device) for i in range(0, per_rank, micro)]

    val = torch.from_numpy(eval_windows(streams.val, cfg.seq_len, cfg.eval_tokens).astype(np.int64))
    # Bits per byte of the evaluated windows: scale nats/token by tokens per byte of the validation text.
    tokens_per_byte = len(streams.val) / max(streams.val_bytes, 1)

    def evaluate(m) -> dict:
        total, count = 0.0, 0
        for i in range(0, len(val), micro):
            b = _lm_batch(val[i : i + micro], device)
            loss_sum, n, _ = loss_fn(m, b)
            total += float(loss_sum)
            count += int(n)
        nats = total / count
        return {
            "val_loss": nats,
            "val_bpb": nats * tokens_per_byte / math.log(2),
            "val_ppl": math.exp(min(nats, 50)),
        }

    prompts = cfg.sample_prompts or _default_prompts(streams.val, tokenizer)

    def sample(m) -> list[str]:
        return sample_text(m, tokenizer, prompts, cfg.sample_tokens, seed=cfg.loop.seed)

    model, metrics = train_and_export(
        stage,
        model,
        get_batch,
        loss_fn,
        compile=cfg.compile,
        evaluate=evaluate,
        sample=sample,
        items_name="tok",
    )
    if info.is_main:
        eos = [tokenizer.convert_tokens_to_ids(t) for t in (END_OF_TURN, ENDOFTEXT)]
        save_hf_checkpoint(
            model, tokenizer, out, eos_token_ids=[i for i in eos if isinstance(i, int) and i >= 0]
        )
        stage.record(
            parent=cfg.init_from or cfg.tokenizer,
            data_fingerprint=streams.fingerprint,
            metrics={**metrics, "parameters": n_params},
        )
    finish_distributed(info)
    return out


def _lm_batch(windows: torch.Tensor, device) -> dict:
    x = windows[:, :-1].to(device)
    y = windows[:, 1:].to(device)
    return {"input_ids": x, "labels": y, "count": y.numel()}


def _default_prompts(val: np.ndarray, tokenizer, n: int = 3, length: int = 8) -> list[str]:
    """Starts of validation documents (text after a separator), so samples show how the model continues."""
    from rlhfkit.tokenizer import document_separator_id

    sep = document_separator_id(tokenizer)
    starts = [0] + [int(i) + 1 for i in np.flatnonzero(val == sep)[: n * 4]]
    prompts = []
    for s in starts:
        ids = val[s : s + length]
        if len(ids) == length and sep not in ids:
            prompts.append(tokenizer.decode(ids.tolist()))
        if len(prompts) == n:
            break
    return prompts or [""]


@torch.no_grad()
def sample_text(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int = 0) -> list[str]:
    """Seeded temperature sampling of short continuations, to watch what the model has learned.

    Uses the project's generation engine, one batch for all prompts; the same seed gives samples that are
    comparable across evaluations.
    """
    from rlhfkit.generation import SamplingParams, generate
    from rlhfkit.generation.text import pad_id

    stop = tuple(i for i in (tokenizer.eos_token_id, tokenizer.bos_token_id) if i is not None)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] or list(stop[-1:]) for p in prompts]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, stop_token_ids=stop, seed=seed)
    outs = generate(model, ids, params, pad_token_id=pad_id(tokenizer), tokenizer=tokenizer)
    return [p + o.text for p, o in zip(prompts, outs)]
