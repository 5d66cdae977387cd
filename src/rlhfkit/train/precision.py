"""What `--dtype` means for a training stage.

- Weights that train keep fp32 master copies (AdamW updates of bf16 weights lose small steps to rounding);
  on CUDA the forwards run under a bf16/fp16 autocast (`device.autocast`), which is where the speed is.
- Weights that do not train are loaded directly in the chosen dtype: a LoRA model's frozen base, PPO's reward
  model, a separate reference. LoRA adapters themselves stay fp32 (peft's default).
- On a CPU `auto` is float32, so nothing changes; an explicit `--dtype bfloat16` on a CPU halves the frozen
  weights of a LoRA run and the frozen models, but runs no autocast (CPU bf16 matmuls are slow without AMX).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from rlhfkit.device import autocast, pick_dtype


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype  # the chosen compute dtype (`--dtype`)

    @classmethod
    def of(cls, device: torch.device, name: str) -> Precision:
        return cls(device, pick_dtype(name, device))

    def trainable_load_dtype(self, lora: bool) -> torch.dtype:
        """The dtype to load the model being trained in: fp32 masters, except a LoRA run's frozen base."""
        return self.dtype if lora else torch.float32

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.dtype)
