"""The start and the end that every training stage's `run(config)` shares (pretrain, sft, reward, dpo).

A stage reads top to bottom as

    require(cfg, model="a base checkpoint folder", data="a chats JSONL file")
    stage = start_stage("sft", cfg)
    ...  # the stage's own part: data, model, get_batch, loss_fn, evaluate
    model, metrics = train_and_export(stage, model, get_batch, loss_fn, evaluate=evaluate)
    if stage.info.is_main:
        ...  # save the model (each stage its own way)
        stage.record(parent=cfg.model, data_fingerprint=..., metrics=metrics)
    finish_distributed(stage.info)
    return stage.out

so what differs between stages is all that their `run()` spells out (`require` is `config.require`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.artifacts import write_manifest
from rlhfkit.train.distributed import DistInfo, init_distributed, pick_device
from rlhfkit.train.loop import LoopConfig, set_seed, train_loop
from rlhfkit.train.sharding import export_model, resolve_shard, wrap_model


@dataclass(frozen=True)
class StageRun:
    """A training stage under way: its name (progress bar, `rlhfkit.json`), config, output folder, device and
    torchrun rank."""

    name: str
    config: Any
    out: Path
    device: torch.device
    info: DistInfo

    def record(
        self,
        *,
        parent: str | None,
        metrics: dict,
        data_fingerprint: str | None = None,
        extra: dict | None = None,
    ) -> Path:
        """Write the output's `rlhfkit.json`: the stage, its config and seed, parent artifact, data and metrics."""
        return write_manifest(
            self.out,
            stage=self.name,
            config=self.config,
            seed=self.config.loop.seed,
            parent=parent,
            data_fingerprint=data_fingerprint,
            metrics=metrics,
            extra=extra,
        )


def start_stage(name: str, cfg: Any) -> StageRun:
    """Pick the device, join torchrun's group (when launched by it) and seed everything.

    Seeding comes before the stage builds anything, so a stage's data order and initial weights are a pure
    function of `cfg.loop.seed`.
    """
    device = pick_device(cfg.device)
    info = init_distributed(device)
    set_seed(cfg.loop.seed)
    return StageRun(name, cfg, Path(cfg.out), device, info)


def train_and_export(
    stage: StageRun,
    model: torch.nn.Module,
    get_batch: Callable,
    loss_fn: Callable,
    *,
    loop: LoopConfig | None = None,
    compile: bool = False,
    **loop_options: Any,
) -> tuple[torch.nn.Module | None, dict]:
    """Train `model` with the shared loop (`loop`: default the config's; `loop_options`: evaluate, sample,
    items_name), then return the plain trained model (FSDP: the full weights, gathered on rank 0; None on the
    other ranks) and the final metrics: the loop's last record without its text samples, plus `wall_seconds`
    (training and export; a stage's own work after it, such as saving, is not counted).
    """
    loop = loop or stage.config.loop
    t0 = time.perf_counter()
    last = train_loop(
        _module_to_train(model, loop.shard, stage.info, compile),
        loop,
        stage.out,
        get_batch,
        loss_fn,
        dist_info=stage.info,
        description=stage.name,
        **loop_options,
    )
    model = export_model(model, stage.info)
    metrics = {k: v for k, v in last.items() if k != "samples"}
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return model, metrics


def _module_to_train(model: torch.nn.Module, shard: str, info: DistInfo, compile: bool) -> torch.nn.Module:
    """The module the loop steps: `model` wrapped for DDP or sharded with FSDP, and compiled if asked."""
    shard = resolve_shard(shard, info)
    if not compile:
        return wrap_model(model, shard, info)
    # FSDP shards the module itself (then compile); DDP wraps the compiled module.
    if shard == "fsdp":
        return torch.compile(wrap_model(model, shard, info))
    return wrap_model(torch.compile(model), shard, info)
