"""What `--dtype` means for a training stage.

- Weights that train keep fp32 master copies (AdamW updates of bf16 weights lose small steps to rounding);
  on CUDA the forwards run under a bf16/fp16 autocast (`device.autocast`), which is where the speed is.
- Weights that do not train are loaded directly in the chosen dtype: a LoRA model's frozen base, PPO's reward
  model, a separate reference. LoRA adapters themselves stay fp32 (peft's default).
- On a CPU `auto` is float32, except for a LoRA run's frozen base where the CPU multiplies bf16 natively
  (AMX or AVX512-BF16 in /proc/cpuinfo, `device.cpu_native_bf16`): that base is stored in bf16, and the lean
  training forward (`train.lean_forward`) multiplies it in bf16 with fp32 accumulation while adapters,
  norms, attention and the loss stay fp32 (SmolLM2-135M LoRA step: docs/performance.md). `--dtype float32`
  turns it off; one line says what was chosen. An explicit `--dtype bfloat16` on a CPU halves the frozen
  weights of a LoRA run and the frozen models, and runs no autocast.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from rlhfkit.device import autocast, cpu_native_bf16, pick_dtype

_SAID: set[str] = set()  # choices already logged by this process


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype  # the chosen compute dtype (`--dtype`)
    lora_base_dtype: torch.dtype  # a LoRA run's frozen base: `dtype`, or bf16 under `auto` (module doc)

    @classmethod
    def of(cls, device: torch.device, name: str) -> Precision:
        dtype = pick_dtype(name, device)
        base = dtype
        if name == "auto" and device.type == "cpu" and cpu_native_bf16():
            base = torch.bfloat16
        return cls(device, dtype, base)

    def trainable_load_dtype(self, lora: bool) -> torch.dtype:
        """The dtype to load the model being trained in: fp32 masters, except a LoRA run's frozen base."""
        if not lora:
            return torch.float32
        if self.device.type == "cpu":
            _say_once(self.lora_base_dtype)
        return self.lora_base_dtype

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.dtype)


def _say_once(base: torch.dtype) -> None:
    flag = cpu_native_bf16()
    if base == torch.bfloat16 and flag:
        line = (
            f"precision: LoRA base weights in bfloat16 (this CPU has {flag}: native bf16 matmuls, fp32 "
            "accumulation); adapters, norms and the loss in float32; --dtype float32 keeps everything fp32"
        )
    elif base == torch.bfloat16:
        line = (
            "precision: LoRA base weights in bfloat16 (--dtype bfloat16; no native bf16 matmuls on this CPU)"
        )
    else:
        why = f"by --dtype; this CPU has {flag}" if flag else "this CPU has no amx_bf16/avx512_bf16"
        line = f"precision: LoRA base weights in {str(base).removeprefix('torch.')} ({why})"
    if line not in _SAID:
        _SAID.add(line)
        print(line)
