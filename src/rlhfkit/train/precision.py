"""What `--dtype` means for a training stage.

- Weights that train keep fp32 master copies (AdamW updates of bf16 weights lose small steps to rounding);
  on CUDA the forwards run under a bf16/fp16 autocast (`device.autocast`), which is where the speed is.
- Weights that do not train are loaded directly in the chosen dtype: a LoRA model's frozen base, PPO's reward
  model, a separate reference. LoRA adapters themselves stay fp32 (peft's default).
- On a CPU `auto` is float32, except for a LoRA run's frozen base where the CPU multiplies bf16 natively
  (AMX or AVX512-BF16 in /proc/cpuinfo, `device.cpu_native_bf16`): that base is stored in bf16, and the lean
  training forward (`train.lean_forward`) multiplies it, the adapters' side path and attention's products
  in bf16 with fp32 accumulation, while the adapters' master weights and gradients, sums, norms, the softmax
  and the loss stay fp32 (SmolLM2-135M LoRA step: docs/performance.md). `--dtype float32`
  turns it off; one line says what was chosen. An explicit `--dtype bfloat16` on a CPU halves the frozen
  weights of a LoRA run and the frozen models, and runs no autocast.
- Reward models are the exception to "no autocast on a CPU": under `auto` on a CPU with native bf16 matmuls
  they train (all but a LoRA run, whose bf16 base has the path above) and score under a CPU bf16 autocast
  (`Precision.scorer_bf16`; fp32 master weights, scores and loss in fp32). On AMD Zen 4 (AVX512-BF16) the
  bundled MiniLM reward model trains and scores 2.5x faster that way, SmolLM2-135M's 1.7x and 1.6x, the demo's
  1.3M one 1.3x and 1.6x (`benchmarks/reward_bf16.py`, docs/performance.md), with the same held-out accuracy.
  The policies keep fp32: a tiny policy's own training already runs its lean path.
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
    scorer_bf16: bool = False  # reward models train and score under a CPU bf16 autocast (module doc)

    @classmethod
    def of(cls, device: torch.device, name: str) -> Precision:
        dtype = pick_dtype(name, device)
        native = name == "auto" and device.type == "cpu" and cpu_native_bf16() is not None
        return cls(device, dtype, torch.bfloat16 if native else dtype, scorer_bf16=native)

    def trainable_load_dtype(self, lora: bool) -> torch.dtype:
        """The dtype to load the model being trained in: fp32 masters, except a LoRA run's frozen base."""
        if not lora:
            return torch.float32
        if self.device.type == "cpu":
            _say_once(self.lora_base_dtype)
        return self.lora_base_dtype

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.dtype)

    def say_scorer(self) -> bool:
        """`scorer_bf16`, after saying once what reward models compute in on this CPU."""
        if self.device.type == "cpu":
            flag = cpu_native_bf16()
            if self.scorer_bf16:
                _say(
                    f"precision: reward-model matmuls in bfloat16 under autocast (this CPU has {flag}); weights, "
                    "scores and the loss in float32; --dtype float32 keeps everything fp32"
                )
            else:
                why = "by --dtype" if flag else "this CPU has no amx_bf16/avx512_bf16"
                _say(f"precision: reward model in {str(self.dtype).removeprefix('torch.')} ({why})")
        return self.scorer_bf16


def _say_once(base: torch.dtype) -> None:
    flag = cpu_native_bf16()
    if base == torch.bfloat16 and flag:
        line = (
            f"precision: LoRA base weights in bfloat16 (this CPU has {flag}: native bf16 matmuls, fp32 "
            "accumulation), and so are the adapters' and attention's products; adapter weights, norms, "
            "softmax and the loss in float32; --dtype float32 keeps everything fp32"
        )
    elif base == torch.bfloat16:
        line = (
            "precision: LoRA base weights in bfloat16 (--dtype bfloat16; no native bf16 matmuls on this CPU)"
        )
    else:
        why = f"by --dtype; this CPU has {flag}" if flag else "this CPU has no amx_bf16/avx512_bf16"
        line = f"precision: LoRA base weights in {str(base).removeprefix('torch.')} ({why})"
    _say(line)


def _say(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        print(line)
