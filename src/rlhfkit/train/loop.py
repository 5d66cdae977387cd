"""The shared training loop used by every stage (pretrain, SFT, reward model, ...).

A stage hands the loop three functions and a config:

* ``get_batch(step, rank, world_size) -> list[micro_batch]``: this rank's micro-batches of optimizer step
  `step`. Batches are a pure function of (seed, step), so resuming at step `s` replays exactly the data a
  run that never stopped would have seen, and a torchrun run with N ranks sees the same *global* batch as
  one process (each rank takes its slice).
* ``loss_fn(model, micro_batch) -> (loss_sum, count, metrics)``: the summed loss over the micro-batch's
  `count` items (tokens for language modelling, pairs for a reward model). The loop divides by the global
  count of the step, so gradient accumulation and DDP give exactly the gradient of one big batch even when
  micro-batches hold different numbers of tokens (SFT masks).
* ``evaluate(model) -> dict`` (optional) and ``sample(model) -> list[str]`` (optional), run every
  ``eval_every`` steps on rank 0 with the model in eval mode.

What the loop owns: AdamW with decoupled weight decay (none on norms and biases), linear warmup then cosine
decay to ``min_lr_ratio * lr``, gradient clipping, a rich progress bar with items/s and ETA, `metrics.jsonl`,
and an atomic checkpoint every ``save_every`` steps that a restarted run resumes from. `lm_loss` is the language
modelling loss that pretraining, SFT and PPO-ptx share.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

from rlhfkit.train import fast_linear
from rlhfkit.train.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from rlhfkit.train.distributed import DistInfo, sum_floats
from rlhfkit.train.head_loss import linear_cross_entropy
from rlhfkit.train.logits import causal_lm_of, hidden_at, plain_lm_head
from rlhfkit.train.sharding import export_model, is_sharded


@dataclass
class LoopConfig:
    max_steps: int = 1000  # optimizer steps (stages with --epochs set it from the data size)
    lr: float = 1e-3  # peak learning rate (AdamW), reached after the warmup
    min_lr_ratio: float = 0.1  # the cosine schedule decays to lr * this at max_steps
    warmup_steps: int = 50  # linear warmup from 0 to lr
    weight_decay: float = 0.1  # decoupled AdamW weight decay (never on norms and biases)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0: off
    eval_every: int = 100  # evaluate every N steps (and at the end)
    save_every: int = 200  # checkpoint every N steps (and at the end); a rerun resumes from it
    log_every: int = 10  # a metrics line every N steps
    seed: int = 0  # seeds torch, numpy and random; batches are a function of (seed, step)
    shard: str = (
        "auto"  # under torchrun: auto (ddp), ddp, fsdp (FSDP2: params, grads, optimizer sharded) or none
    )


@dataclass
class FineTuneLoopConfig(LoopConfig):
    """The loop's settings for fine-tuning a trained model on comparisons (reward model, DPO): the data is small,
    so no weight decay, and evaluations, checkpoints and metrics lines come often."""

    weight_decay: float = 0.0
    eval_every: int = 50
    save_every: int = 50
    log_every: int = 5


MicroBatch = Any
GetBatch = Callable[[int, int, int], list[MicroBatch]]
LossFn = Callable[[torch.nn.Module, MicroBatch], tuple[torch.Tensor, torch.Tensor, dict]]


def lm_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Summed next-token cross-entropy (labels already shifted; -100 ignored) and the number of tokens.

    Batches are right-padded, so causal attention never lets a real token see a pad: no attention mask is
    needed (and building one costs time). For a plain Hugging Face model the LM head runs only on positions
    that have a label — in SFT most positions are prompt tokens, and the head is the costliest matmul of a
    tiny model — fused with the loss (`train.head_loss`), after the lean training forward where it applies
    (`train.lean_forward`). That shortcut is taken only where it is exact (`train.logits.plain_lm_head`);
    other architectures (Gemma-2's soft-capping, ...) go through the model's own forward.
    """
    labels = batch["labels"]
    keep = labels != -100
    # An FSDP-sharded model gathers its root parameters (embeddings, head) only in its own forward. With every
    # position labelled (pretraining) there is nothing to skip, and the lean forward and fused loss pay with
    # AVX-512 (their oneDNN matmuls; `tiny`, batch 32 x 256, 1 thread: 975 -> 734 ms per step). Under AVX2
    # they were 3% slower than the model's own forward until the weight gradients stopped copying their
    # operands transposed (`fast_linear.mm_tn`); since then they are 1.13x faster there too where oneDNN is
    # the fp32 library (AMD Zen 4 under the AVX2 emulation, 2 threads: 823 -> 730 ms). An Intel CPU without
    # AVX-512 keeps the model's own forward (not measured since).
    plain = plain_lm_head(model) and not isinstance(model, FSDPModule)  # False for a DDP wrapper too
    if plain and (not keep.all() or _avx512() or fast_linear.usable()):
        lm = causal_lm_of(model)
        loss = linear_cross_entropy(hidden_at(lm.model, batch["input_ids"], keep), lm.lm_head, labels[keep])
    else:
        logits = model(input_ids=batch["input_ids"], use_cache=False).logits
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
    return loss, keep.sum(), {}


def _avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Item indices of optimizer step `step`: consecutive slices of seeded per-epoch shuffles of `n` items.

    A pure function of (seed, step), so a resumed run sees exactly the data an uninterrupted one would; a batch
    that crosses an epoch boundary continues into the next epoch's shuffle.
    """
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch_size - len(out), n - offset)
        out.extend(int(i) for i in perm[offset : offset + take])
        pos += take
    return out


def group_batches(
    n: int,
    cfg: Any,
    info: DistInfo,
    length: Callable[[int], int],
    collate: Callable[[list[int]], dict],
) -> GetBatch:
    """`get_batch` over `n` groups (a comparison with its completions: the reward model's and DPO's items): each
    step's `cfg.batch_size` groups from `epoch_batch_indices` (seeded by `cfg.loop.seed`), this rank's share
    sorted by `length(group)` into micro-batches of `cfg.micro_batch_size`, each made by `collate(indices)`."""
    per_rank = cfg.batch_size // info.world_size
    micro = max(1, min(cfg.micro_batch_size, per_rank))

    def get_batch(step: int, rank: int, world: int) -> list[dict]:
        mine = epoch_batch_indices(n, cfg.batch_size, cfg.loop.seed, step)[
            rank * per_rank : (rank + 1) * per_rank
        ]
        # Micro-batches of similar lengths waste less compute on padding; the step's gradient is the same.
        mine.sort(key=length)
        return [collate(mine[i : i + micro]) for i in range(0, len(mine), micro)]

    return get_batch


def make_optimizer(model: torch.nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, vectors (norms, biases) do not. Tied weights appear once."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters in one pass: much less per-tensor overhead on a CPU.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warmup for `warmup_steps`, then cosine decay to `min_lr_ratio * lr` at `max_steps`."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl`; on resume drops lines past the checkpoint."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln and json.loads(ln).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def last_logged(path: Path) -> dict:
    """The last record of a `metrics.jsonl` ({} if there is none).

    A stage whose loop had nothing left to do (re-running a finished command, or resuming a run killed
    after its last checkpoint) reports these as its final metrics instead of an empty dict."""
    path = Path(path)
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def _progress(total: int, enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def train_loop(
    model: torch.nn.Module,
    cfg: LoopConfig,
    out_dir: Path,
    get_batch: GetBatch,
    loss_fn: LossFn,
    *,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    sample: Callable[[torch.nn.Module], list[str]] | None = None,
    dist_info: DistInfo | None = None,
    items_name: str = "tok",
    description: str = "train",
    on_log: Callable[[dict], None] | None = None,
) -> dict:
    """Run (or resume) training to `cfg.max_steps`. Returns the last logged metrics (with eval results);
    when no step is left to run, the last record already in `metrics.jsonl`.

    `model` may be wrapped in DistributedDataParallel (checkpoints store the unwrapped weights) or sharded with
    FSDP2 (`train.sharding.wrap_model`): then every rank writes its shards of each checkpoint, and evaluation
    runs on rank 0 over a plain copy of the gathered weights.
    """
    info = dist_info or DistInfo()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_model = getattr(model, "module", model)
    optimizer = make_optimizer(raw_model, cfg)
    sharded = is_sharded(raw_model)
    eval_copy: dict = {}  # FSDP: the plain model evaluations run on (rank 0), refreshed at each evaluation

    start_step = 0
    ckpt = find_checkpoint(out_dir)
    if ckpt is not None:
        start_step, _ = load_checkpoint(ckpt, raw_model, optimizer)
    log = MetricsLog(
        out_dir / "metrics.jsonl", start_step if ckpt is not None else None, enabled=info.is_main
    )
    if ckpt is not None and info.is_main:
        print(f"resuming from {ckpt} at step {start_step}/{cfg.max_steps}")

    last: dict = {}
    window_items, window_time = 0.0, 0.0
    t_start = time.perf_counter()
    model.train()
    with _progress(cfg.max_steps, info.is_main) as progress:
        task = progress.add_task(description, total=cfg.max_steps, completed=start_step, info="")
        for step in range(start_step, cfg.max_steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = get_batch(step, info.rank, info.world_size)
            loss_sum, count, step_metrics = _accumulate(model, micro_batches, loss_fn, info)
            grad_norm = _full(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip))
            if torch.isfinite(grad_norm):
                optimizer.step()
            elif info.is_main:
                print(f"step {step}: non-finite gradient norm, update skipped")
            optimizer.zero_grad(set_to_none=True)

            dt = time.perf_counter() - t0
            window_items += count
            window_time += dt
            loss = loss_sum / max(count, 1e-9)
            done = step + 1
            rate = window_items / max(window_time, 1e-9)
            progress.update(task, completed=done, info=f"loss {loss:.3f} | {rate:,.0f} {items_name}/s")

            if done % cfg.log_every == 0 or done == cfg.max_steps or done == start_step + 1:
                last = {
                    "step": done,
                    "time": round(time.perf_counter() - t_start, 3),
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    f"{items_name}_per_s": rate,
                    **step_metrics,
                }
                window_items, window_time = 0.0, 0.0
            eval_now = evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.max_steps)
            if (
                eval_now and sharded
            ):  # a collective: every rank sends its shards, rank 0 gets the full weights
                eval_copy["model"] = export_model(raw_model, info, into=eval_copy.get("model"))
            if eval_now and info.is_main:
                eval_model = eval_copy["model"] if sharded else raw_model
                model.eval()
                with torch.no_grad():
                    last.update({"step": done, **evaluate(eval_model)})
                    if sample is not None:
                        samples = sample(eval_model)
                        last["samples"] = samples
                        progress.console.print(f"[dim]step {done} samples:[/dim]")
                        for s in samples:
                            progress.console.print("  " + repr(s)[:200])
                model.train()
                shown = {
                    k: round(v, 4) for k, v in last.items() if k.startswith("val_") and isinstance(v, float)
                }
                progress.console.print(f"step {done}: {shown}")
            if last.get("step") == done:
                log.write(last)
                if on_log is not None:
                    on_log(last)
            if done % cfg.save_every == 0 or done == cfg.max_steps:
                extra = {"config": asdict(cfg)}
                if sharded:
                    save_sharded_checkpoint(out_dir, raw_model, optimizer, done, extra, info)
                elif info.is_main:
                    save_checkpoint(out_dir, raw_model, optimizer, done, extra, world_size=info.world_size)
    if not last and info.is_main:  # no step ran here: the run had already finished
        last = last_logged(log.path)
    return last


def _accumulate(model, micro_batches, loss_fn, info: DistInfo) -> tuple[float, float, dict]:
    """Forward/backward every micro-batch, scaling each so the summed gradient is the global-batch mean."""
    # Counts are known before any forward (they depend only on the data), so we can all-reduce them first.
    # The sums travel through `sum_floats`, which puts them on the backend's device (NCCL takes CUDA tensors only).
    counts = [float(_count_of(mb)) for mb in micro_batches]
    total = sum_floats([sum(counts)], info)[0]
    loss_total, metrics = 0.0, {}
    n = len(micro_batches)
    for i, mb in enumerate(micro_batches):
        # DDP averages gradients over ranks; multiply by world size so the result is sum/total.
        sync = not info.enabled or i == n - 1
        ctx = model.no_sync() if (info.enabled and not sync and hasattr(model, "no_sync")) else nullcontext()
        with ctx:
            loss_sum, count, m = loss_fn(model, mb)
            (loss_sum * (info.world_size / max(total, 1e-9))).backward()
        loss_total += float(loss_sum.detach())
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + float(v) / n
    # Per-micro-batch metrics (e.g. a reward model's accuracy) become the mean over every rank's micro-batches.
    names = sorted(metrics)
    sums = sum_floats([loss_total, *(metrics[k] for k in names)], info)
    return sums[0], total, {k: v / info.world_size for k, v in zip(names, sums[1:])}


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from an FSDP DTensor (clip_grad_norm_ over sharded gradients returns a replicated one)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _count_of(mb) -> float:
    """Items a micro-batch contributes to the loss: its `count` entry (e.g. unmasked tokens or pairs)."""
    if isinstance(mb, dict) and "count" in mb:
        return float(mb["count"])
    raise TypeError("a micro-batch must be a dict with a 'count' entry (the number of loss items)")
