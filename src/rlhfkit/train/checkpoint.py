"""Crash-safe training checkpoints: weights, optimizer, step and RNG state, written atomically.

A checkpoint is a folder `<out>/checkpoint/` that is only ever replaced whole (write `checkpoint.tmp`, then
swap), so a `kill -9` at any moment leaves either the previous or the new checkpoint, never half of one.
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

from rlhfkit.errors import RlhfkitError

CHECKPOINT_DIR = "checkpoint"


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
    out_dir: Path, model: torch.nn.Module, optimizer, step: int, extra: dict | None = None
) -> Path:
    """Write `<out>/checkpoint/` atomically. `extra` is any JSON-serializable state of the stage."""
    out_dir = Path(out_dir)
    final = out_dir / CHECKPOINT_DIR
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    old = out_dir / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Tied weights share storage; safetensors refuses shared tensors, so store clones (loading re-ties them).
    state = {k: v.detach().clone().contiguous() for k, v in trained_state(model).items()}
    save_file(state, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "extra": extra or {}}, indent=1))
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
        if (cand / "state.json").exists() and (cand / "trainer.pt").exists():
            return cand
    return None


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer) -> tuple[int, dict]:
    """Restore weights, optimizer and RNG state; return (step, extra)."""
    state = load_file(str(ckpt / "model.safetensors"))
    trained = trained_state(model)
    if set(state) != set(trained):
        raise RlhfkitError(
            f"{ckpt}: its weights do not match this model's trainable weights (a checkpoint of another "
            "configuration, e.g. with or without LoRA); remove it or use another --out"
        )
    model.load_state_dict(state, strict=len(trained) == len(model.state_dict()))
    trainer = torch.load(ckpt / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    _set_rng_state(trainer["rng"])
    meta = json.loads((ckpt / "state.json").read_text())
    return int(meta["step"]), meta.get("extra", {})
