"""torchrun awareness: one process per rank, DDP/FSDP2 with gloo on CPU and nccl on CUDA.

Outside torchrun every function here is a no-op, so the same training code runs on a laptop unchanged.
Everything goes through `torch.distributed` (no home-made communication): sums with `all_reduce`, Python
objects (rollouts, generated texts) with `all_gather_object`.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rlhfkit.device import pick_device  # noqa: F401  (re-exported: stages import it from here)
from rlhfkit.errors import RlhfkitError

# Force a backend (e.g. gloo on GPUs for debugging); default: nccl when the device is CUDA, else gloo.
BACKEND_ENV = "RLHFKIT_DIST_BACKEND"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "gloo" or "nccl" once joined; "" for one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def choose_backend(device: torch.device) -> str:
    """nccl for CUDA, gloo for the CPU; `RLHFKIT_DIST_BACKEND` overrides, with a clear error for nccl without GPUs."""
    backend = os.environ.get(BACKEND_ENV, "").strip().lower() or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in ("gloo", "nccl"):
        raise RlhfkitError(f"{BACKEND_ENV}={backend}: expected gloo or nccl")
    if backend == "nccl" and (device.type != "cuda" or not torch.cuda.is_available()):
        raise RlhfkitError(
            f"the nccl backend needs CUDA GPUs, but this rank runs on {device} "
            f"({'no CUDA device is visible' if not torch.cuda.is_available() else 'use --device cuda'}); "
            f"unset {BACKEND_ENV} or use gloo on CPUs"
        )
    return backend


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this process's place."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RlhfkitError(
                f"torchrun started local rank {local_rank} but this node has {count} GPU(s): "
                f"use --nproc_per_node {count} or fewer"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        backend = choose_backend(device)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        # A stage that raises (bad input) must still leave the group, or gloo's threads abort the process.
        atexit.register(_leave_quietly)
        _say_why_on_sigterm(dist.get_rank(), dist.get_world_size())
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def _say_why_on_sigterm(rank: int, world: int) -> None:
    """When one rank dies, torchrun stops the others with SIGTERM and prints its own launcher traceback.
    Each stopped rank says in one line what happened and how to continue, instead of vanishing silently."""

    def stop(signum, frame):
        sys.stderr.write(
            f"rlhfkit: error: rank {rank} of {world} stopped by torchrun (SIGTERM): another rank failed or the "
            "job was interrupted (torchrun's report below names the rank); rerun the same command to resume "
            "from the last checkpoint\n"
        )
        sys.stderr.flush()
        os._exit(128 + signum)  # no atexit: the process group is gone with the failed rank

    signal.signal(signal.SIGTERM, stop)


# What gloo and nccl say when a peer process has gone away mid-collective.
LOST_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL", "Gloo")


def lost_peer_message(exc: BaseException) -> str | None:
    """The one-line error for a collective that failed because another rank went away, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not isinstance(exc, dist.DistBackendError) and not any(k in text for k in LOST_PEER_SIGNS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's "[.../pair.cc:537] " source location
    return (
        f"rank {os.environ.get('RANK', '?')} of {os.environ['WORLD_SIZE']}: lost contact with another rank "
        f"({first[:160]}); rerun the same command to resume from the last checkpoint"
    )


def _leave_quietly() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_device(info: DistInfo) -> torch.device:
    """Where collective tensors must live: NCCL only moves CUDA tensors, gloo prefers CPU ones."""
    if info.backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `t` over ranks (in place, and returned); the tensor may live anywhere, it travels on the right device."""
    if info.enabled:
        where = reduce_device(info)
        if t.device == where:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        else:
            moved = t.to(where)
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            t.copy_(moved)
    return t


def sum_floats(values: list[float], info: DistInfo) -> list[float]:
    """Sum each of `values` over ranks in one all-reduce (float64, so metric sums do not lose digits)."""
    if not info.enabled:
        return list(values)
    return all_reduce_sum(torch.tensor(values, dtype=torch.float64), info).tolist()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when `flag` is true on some rank: lets every rank take the same branch (skip, stop) and never hang."""
    return bool(sum_floats([float(flag)], info)[0] > 0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (pickled; keep tensors on the CPU)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_range(n: int, info: DistInfo) -> range:
    """This rank's contiguous share of `n` items (the first `n % world` ranks take one more).

    Concatenating every rank's share in rank order gives 0..n-1 back, so `gather_objects` restores the order.
    """
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return range(start, start + base + (1 if info.rank < extra else 0))


def map_across_ranks(items: list, fn: Callable[[list], list], info: DistInfo) -> list:
    """`fn(items)` with the work split: each rank maps its contiguous share, every rank gets the whole result in
    order. `fn` must return one output per input (e.g. generation: one completion per prompt)."""
    if not info.enabled:
        return fn(items)
    parts = gather_objects(fn([items[i] for i in shard_range(len(items), info)]), info)
    return [x for part in parts for x in part]


def rank_seed(seed: int | None, info: DistInfo) -> int | None:
    """A sampling seed of this rank's own (unchanged with one process): ranks sharing one seed would draw the
    same noise for their first rows, correlating samples that should be independent."""
    if seed is None or not info.enabled:
        return seed
    return (seed * 1_000_033 + info.rank) % 2**62


def check_divisible(flag: str, value: int, info: DistInfo, unit: str = "") -> None:
    """One clear error when a global batch flag does not split evenly across the ranks."""
    if info.enabled and value % info.world_size:
        what = f" {unit}" if unit else ""
        raise RlhfkitError(
            f"{flag} {value}{what} must divide evenly across {info.world_size} processes "
            f"(the batch flags are global: use a multiple of {info.world_size})"
        )


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
