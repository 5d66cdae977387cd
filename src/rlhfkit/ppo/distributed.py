"""PPO (and RLOO, GRPO) across torchrun ranks: split the rollout, gather it, train each minibatch under DDP.

One step with N ranks and a global `batch_size` B:

1. rank r generates, scores and measures (old/reference log-probs, values) its contiguous share of the B
   episodes (`episode_share`): generation, the reward model and the no-grad forwards — nearly all of a small
   model's step time — split N ways, and the reward and reference models are plain replicas on each rank;
2. `gather_rollout` all-gathers the measured episodes (token ids and per-token floats: kilobytes, not weights)
   so every rank holds the global rollout in the single-process order. Advantages, their whitening, the KL
   controller and every logged statistic are then computed from the global batch on every rank: they equal
   one process's numbers for the same episodes, and every rank takes the same branches (skip, early stop);
3. each minibatch of M episodes is cut into N contiguous parts (`local_part`); the policy and the critic (one
   `PolicyAndValue` module) train under DistributedDataParallel, each rank's token-mean loss rescaled by its
   share of the minibatch's tokens (`token_share`), so DDP's gradient average is exactly the gradient of the
   whole minibatch's token mean.

Sampling: rank r seeds its generator from (seed, step, r), so a 2-rank run draws other (equally valid) episodes
than a 1-rank run; given the same episodes, the update is the same (tests/test_distributed.py checks it).
A resume therefore needs the same number of ranks (checked against the checkpoint).
"""

from __future__ import annotations

import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo.rollout import Rollout, token_logprobs
from rlhfkit.train.distributed import (  # noqa: F401  (rank_seed: the trainer's per-rank sampling seed)
    DistInfo,
    check_divisible,
    gather_objects,
    rank_seed,
    shard_range,
    sum_floats,
)
from rlhfkit.train.sharding import resolve_shard

_PER_TOKEN = ("logprobs", "ref_logprobs", "values")


def check_world(batch_size: int, minibatch_size: int, shard: str, info: DistInfo) -> None:
    """Bad input caught before any collective: every rank raises the same error, none waits on another."""
    shard = resolve_shard(shard, info)
    if shard == "fsdp":
        raise RlhfkitError(
            "--shard fsdp is not supported by ppo/rloo/grpo yet (generation reads whole weights): use --shard ddp"
        )
    if shard == "none" and info.enabled:
        raise RlhfkitError(
            "--shard none with several processes would train a separate policy on each rank: use --shard ddp"
        )
    check_divisible("--batch-size", batch_size, info, "episodes")
    check_divisible("--minibatch-size", minibatch_size, info, "episodes")


def check_resume_world(ckpt, saved_world: int, info: DistInfo) -> None:
    if saved_world != info.world_size:
        raise RlhfkitError(
            f"{ckpt}: written by a run with {saved_world} process(es), resumed with {info.world_size}: each rank "
            "samples its own share of the episodes, so the run continues only with the same number of processes "
            "(or start in a new --out)"
        )


def episode_share(indices: list[int], info: DistInfo) -> list[int]:
    """This rank's contiguous share of the step's episode list (all of it with one process)."""
    if not info.enabled:
        return indices
    return [indices[i] for i in shard_range(len(indices), info)]


def gather_rollout(rollout: Rollout, pad_id: int, info: DistInfo, extra=None) -> tuple[Rollout, list]:
    """The global rollout (every rank's episodes in rank order) on every rank, and the concatenated `extra` lists.

    Timings become the slowest rank's (the wall-clock the step waited for)."""
    if not info.enabled:
        return rollout, extra
    device = rollout.mask.device
    names = ("sequences", "prompt_lens", "response_ids", "mask", "finished", "raw_scores", *_PER_TOKEN)
    mine = {n: getattr(rollout, n).cpu() for n in names}
    mine.update(texts=rollout.texts, prompt_index=rollout.prompt_index, timings=rollout.timings, extra=extra)
    mine.update(turns=rollout.turns)
    parts = gather_objects(mine, info)

    def cat(name: str, fill: float) -> torch.Tensor:
        tensors = [p[name] for p in parts]
        if tensors[0].dim() == 1:
            return torch.cat(tensors).to(device)
        width = max(t.size(1) for t in tensors)
        padded = [torch.nn.functional.pad(t, (0, width - t.size(1)), value=fill) for t in tensors]
        return torch.cat(padded).to(device)

    full = Rollout(
        sequences=cat("sequences", pad_id),
        prompt_lens=cat("prompt_lens", 0),
        response_ids=cat("response_ids", pad_id),
        mask=cat("mask", 0.0),
        finished=cat("finished", False),
        raw_scores=cat("raw_scores", 0.0),
        texts=[t for p in parts for t in p["texts"]],
        prompt_index=[i for p in parts for i in p["prompt_index"]],
        timings={k: max(p["timings"].get(k, 0.0) for p in parts) for k in rollout.timings},
        turns=None if rollout.turns is None else [t for p in parts for t in p["turns"]],
    )
    for name in _PER_TOKEN:
        setattr(full, name, cat(name, 0.0))
    merged = None if extra is None else [x for p in parts for x in p["extra"]]
    return full, merged


def local_part(idx: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous part of a minibatch's episode indices (the whole minibatch with one process)."""
    return idx if not info.enabled else idx.tensor_split(info.world_size)[info.rank]


def token_share(mask: torch.Tensor, info: DistInfo) -> float:
    """world * (this rank's response tokens) / (the minibatch's tokens): the factor that turns this rank's
    token-mean loss into its part of the minibatch's token mean, once DDP averages the gradients."""
    local = float(mask.sum())
    total = sum_floats([local], info)[0]
    return info.world_size * local / max(total, 1.0)


def global_means(stats: dict[str, float], share: float, info: DistInfo) -> dict[str, float]:
    """Token means over the whole minibatch from every rank's token means (weighted by their token share)."""
    if not info.enabled:
        return stats
    names = sorted(stats)
    sums = sum_floats([float(stats[n]) * share / info.world_size for n in names], info)
    return dict(zip(names, sums))


class PolicyAndValue(torch.nn.Module):
    """The policy and its value model as one module, so DistributedDataParallel sees every trained parameter
    go through its forward (the policy is called through its body and head, never its own forward)."""

    def __init__(self, modules: torch.nn.ModuleDict, value_fn, temperature: float, entropy_grad: bool):
        super().__init__()
        self.parts = modules
        self.value_fn = value_fn
        self.temperature = temperature
        self.entropy_grad = entropy_grad

    def forward(self, batch: dict[str, torch.Tensor]):
        logp, entropy, hidden = token_logprobs(
            self.parts["policy"], batch, self.temperature, with_entropy=True, entropy_grad=self.entropy_grad
        )
        values = self.value_fn(batch, hidden) if self.value_fn is not None else None
        return logp, entropy, values


def training_forward(modules, value_fn, temperature: float, entropy_grad: bool, info: DistInfo):
    """batch -> (log-probs, entropy, values): the plain calls with one process, a DDP module with several."""
    wrapper = PolicyAndValue(modules, value_fn, temperature, entropy_grad)
    if not info.enabled:
        return wrapper
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(wrapper)
