"""Crash-safe training checkpoints: weights, optimizer, step and RNG state, written atomically.

A checkpoint is a folder `<out>/checkpoint/` that is only ever replaced whole (write `checkpoint.tmp`, then
swap), so a `kill -9` at any moment leaves either the previous or the new checkpoint, never half of one.

An FSDP-sharded model is saved with `torch.distributed.checkpoint` instead (`checkpoint/dcp/`: every rank writes
its own shards of the weights and optimizer state, nobody gathers the whole model); `state.json` records the
world size and how the model was sharded, so a resume can refuse what it cannot continue.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhfkit.errors import RlhfkitError, first_line
from rlhfkit.train.safe_state import load_state, save_state

CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE = "trainer"  # trainer.safetensors + trainer.json: optimizer and RNG state, no pickle
LEGACY_TRAINER_STATE = "trainer.pt"  # before safe_state.py: read with the restricted unpickler only


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer,
    step: int,
    extra: dict | None = None,
    world_size: int = 1,
) -> Path:
    """Write `<out>/checkpoint/` atomically (call on rank 0 only). `extra` is any JSON-serializable stage state."""
    out_dir = Path(out_dir)
    tmp = _fresh_tmp(out_dir)
    # Tied weights share storage; safetensors refuses shared tensors, so store clones (loading re-ties them).
    state = {k: v.detach().clone().contiguous() for k, v in trained_state(model).items()}
    save_file(state, str(tmp / "model.safetensors"))
    save_state({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp, TRAINER_STATE)
    return _publish(out_dir, tmp, step, extra, world_size, sharded=False)


def save_sharded_checkpoint(out_dir: Path, model, optimizer, step: int, extra: dict | None, info) -> Path:
    """Every rank calls this: each writes its shards with torch.distributed.checkpoint, rank 0 the rest."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from rlhfkit.train.distributed import barrier

    out_dir = Path(out_dir)
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    if info.is_main:
        _fresh_tmp(out_dir)
    barrier(info)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / "dcp"))
    barrier(info)  # every shard is on disk before rank 0 declares the checkpoint complete
    final = out_dir / CHECKPOINT_DIR
    if info.is_main:
        save_state({"rng": _rng_state()}, tmp, TRAINER_STATE)
        _publish(out_dir, tmp, step, extra, info.world_size, sharded=True)
    barrier(info)
    return final


def _fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(out_dir: Path, tmp: Path, step: int, extra, world_size: int, sharded: bool) -> Path:
    """Write state.json last, then swap the folder in: only a complete checkpoint ever has that name."""
    final = out_dir / CHECKPOINT_DIR
    old = out_dir / (CHECKPOINT_DIR + ".old")
    meta = {"step": step, "extra": extra or {}, "world_size": world_size, "sharded": sharded}
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold: the whole state dict, or, when some weights are frozen (a LoRA model's
    base, a reward model's lower layers), only the trainable ones: the rest cannot have changed, and a full
    copy of a frozen 0.5B base would double the memory and disk of every save."""
    params = dict(model.named_parameters())
    if all(p.requires_grad for p in params.values()):
        return model.state_dict()
    return {name: p for name, p in params.items() if p.requires_grad}


def find_checkpoint(out_dir: Path) -> Path | None:
    """The latest complete checkpoint under `out_dir`, if any (survives a crash during the swap)."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        cand = Path(out_dir) / name
        trainer = (cand / f"{TRAINER_STATE}.json").exists() or (cand / LEGACY_TRAINER_STATE).exists()
        if (cand / "state.json").exists() and trainer:
            return cand
    return None


def checkpoint_meta(ckpt: Path) -> dict:
    """state.json: step, extra, world_size (1 for checkpoints older than this field) and sharded."""
    meta = json.loads((Path(ckpt) / "state.json").read_text())
    meta.setdefault("world_size", 1)
    meta.setdefault("sharded", False)
    return meta


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer) -> tuple[int, dict]:
    """Restore weights, optimizer and RNG state; return (step, extra).

    A sharded (FSDP) checkpoint loads into an FSDP model with any number of ranks (torch.distributed.checkpoint
    reshards); a plain one into a plain or DDP-wrapped model. Mixing the two is refused with a clear error."""
    from rlhfkit.train.sharding import is_sharded

    meta = checkpoint_meta(ckpt)
    if meta["sharded"] != is_sharded(model):
        was, now = ("fsdp", "ddp/none") if meta["sharded"] else ("ddp/none", "fsdp")
        raise RlhfkitError(
            f"{ckpt}: this checkpoint was written with --shard {was}; resume with the same --shard "
            f"(now: {now}), or start in a new --out"
        )
    if meta["sharded"]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(Path(ckpt) / "dcp"), planner=_no_pickle_planner())
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        state = load_file(str(ckpt / "model.safetensors"))
        trained = trained_state(model)
        if set(state) != set(trained):
            raise RlhfkitError(
                f"{ckpt}: its weights do not match this model's trainable weights (a checkpoint of another "
                "configuration, e.g. with or without LoRA); remove it or use another --out"
            )
        model.load_state_dict(state, strict=len(trained) == len(model.state_dict()))
    trainer = _trainer_state(ckpt)
    try:
        if not meta["sharded"]:
            optimizer.load_state_dict(trainer["optimizer"])
        _set_rng_state(trainer["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise RlhfkitError(
            f"{ckpt}: its optimizer or RNG state does not fit this run ({first_line(exc)}); remove it to start "
            "the stage over, or use another --out"
        ) from None
    return int(meta["step"]), meta.get("extra", {})


def _trainer_state(ckpt: Path) -> dict:
    if (ckpt / f"{TRAINER_STATE}.json").exists():
        return load_state(ckpt, TRAINER_STATE)
    # A checkpoint from before safe_state.py. torch's restricted unpickler builds only tensors, containers
    # and the numpy types of the RNG state: a planted pickle cannot run code through it, it fails to load.
    legacy = ckpt / LEGACY_TRAINER_STATE
    numpy_types = [np.ndarray, np.dtype, type(np.dtype("uint32")), _numpy_reconstruct()]
    try:
        with torch.serialization.safe_globals(numpy_types):
            state = torch.load(legacy, weights_only=True)
    except Exception as exc:  # the unpickler raises many types for foreign or damaged files
        raise RlhfkitError(
            f"{legacy}: not a checkpoint rlhfkit can read safely ({first_line(exc)}); remove {ckpt} to start "
            "the stage over, or use another --out"
        ) from None
    if not isinstance(state, dict):
        raise RlhfkitError(f"{legacy}: not a training state (a {type(state).__name__}); remove {ckpt}")
    return state


def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved it
    return core.multiarray._reconstruct


def _no_pickle_planner():
    """DCP's default planner unpickles the non-tensor items of a sharded checkpoint (`weights_only=False`);
    this one reads them with torch's restricted unpickler, which builds plain values only."""
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class NoPicklePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:  # DefaultLoadPlanner's, with weights_only=True
            obj = torch.load(value, weights_only=True)
            fqn = read_item.dest_index.fqn
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], obj)
            else:
                self.state_dict[fqn] = obj

    return NoPicklePlanner()
