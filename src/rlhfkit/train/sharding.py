"""`--shard none|ddp|fsdp`: how a model trains across ranks, and how it comes back as one plain model.

- `ddp` (DistributedDataParallel): every rank holds the whole model, gradients are averaged in buckets.
- `fsdp` (FSDP2, `torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer state are split
  across ranks; each decoder layer is its own unit (gathered just before its forward, freed after), the root
  holds the embeddings and head. On CUDA with bf16 the layers compute in bf16 and reduce gradients in fp32
  (`MixedPrecisionPolicy`), keeping fp32 master weights.
- `none`: the bare model (with several ranks only sensible for debugging: nothing is synchronized).

`auto` is ddp with several processes and none with one. After training, `export_model` returns a plain model
(the full weights gathered onto rank 0) that `save_pretrained` writes as a normal Hugging Face folder.
"""

from __future__ import annotations

import os

import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.train.distributed import DistInfo

SHARDS = ("auto", "none", "ddp", "fsdp")
SHARD_HELP = (
    "auto (ddp with several processes), none, ddp or fsdp (FSDP2: parameters, gradients, optimizer sharded)"
)


def resolve_shard(shard: str, info: DistInfo) -> str:
    if shard not in SHARDS:
        raise RlhfkitError(f"--shard: expected one of {', '.join(SHARDS)}; got '{shard}'")
    if shard == "auto":
        return "ddp" if info.enabled else "none"
    if shard == "ddp" and not info.enabled:
        return "none"  # DDP over one process is the bare model with extra bookkeeping
    return shard


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks to shard one by one: the classes Hugging Face marks `_no_split_modules`."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise RlhfkitError(
            f"--shard fsdp: cannot find the decoder layers of {type(model).__name__} "
            "(no _no_split_modules); use --shard ddp"
        )
    return layers


def wrap_model(
    model: torch.nn.Module, shard: str, info: DistInfo, compute_dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """The module to train for `shard` (already resolved or `auto`). `fsdp` shards `model` in place; on CUDA its
    layers compute in `compute_dtype` (default: bf16 where supported) with fp32 gradient reduction and fp32
    sharded master weights. On the CPU FSDP computes in the parameters' dtype (fp32)."""
    shard = resolve_shard(shard, info)
    if shard == "none":
        return model
    if shard == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized() and "MASTER_ADDR" not in os.environ:
        raise RlhfkitError(
            "--shard fsdp needs torchrun (also for one process): torchrun --nproc_per_node=N -m rlhfkit.cli ..."
        )
    device = next(model.parameters()).device
    if (
        compute_dtype is None and device.type == "cuda"
    ):  # bf16 compute where the GPU has it (device.py's auto)
        from rlhfkit.device import pick_dtype

        compute_dtype = pick_dtype("auto", device)
    kwargs = {}
    if device.type == "cuda" and compute_dtype in (torch.bfloat16, torch.float16):
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule) or any(isinstance(m, FSDPModule) for m in model.modules())


def plain_class(model: torch.nn.Module) -> type:
    """The model's own class (fully_shard swaps in a subclass that mixes in FSDPModule)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank must call this: the full weights, on the CPU of rank 0 ({} elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts)


def export_model(model: torch.nn.Module, info: DistInfo, into: torch.nn.Module | None = None):
    """A plain model with the trained weights: `model` itself unless FSDP-sharded, when every rank must call
    this and rank 0 gets a new (or the given `into`) CPU copy of the full weights; other ranks get None."""
    model = getattr(model, "module", model)
    if not is_sharded(model):
        return model
    state = full_state_dict(model)
    if not info.is_main:
        return None
    if into is None:
        into = plain_class(model)(model.config)
        if getattr(model, "generation_config", None) is not None:
            into.generation_config = model.generation_config
    into.load_state_dict(state, strict=True)
    return into.eval()
