"""torchrun awareness: one process per rank, DDP with gloo on CPU and nccl on CUDA.

Outside torchrun every function here is a no-op, so the same training code runs on a laptop unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rlhfkit.device import pick_device  # noqa: F401  (re-exported: stages import it from here)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this process's place."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def finish_distributed(info: DistInfo) -> None:
    """Wait for every rank (rank 0 saves last), then leave the process group cleanly.

    A rank that simply exits while gloo's background threads are alive can abort ("terminate called without an
    active exception"), failing the whole torchrun job after training succeeded.
    """
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
