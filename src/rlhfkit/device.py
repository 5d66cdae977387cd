"""Where a model runs and in what precision: the `--device` and `--dtype` options every model command shares.

`auto` picks what a user would pick by hand: this rank's GPU when CUDA is there, else the CPU; bfloat16 on a
GPU that supports it, else float32 (a CPU computes bf16 matmuls slower than fp32 unless it has AMX/avx512_bf16,
and tiny models gain nothing from it). On a CPU that has them (`cpu_native_bf16`), training's `auto` also
stores a LoRA run's frozen base in bf16 (`train.precision`).
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext

import torch

from rlhfkit.errors import RlhfkitError

DEVICE_HELP = "auto (this rank's GPU when CUDA is available, else the CPU), cpu, cuda or cuda:N"
DTYPE_HELP = (
    "auto (bfloat16 on a GPU that supports it, else float32; in training on a CPU with native bf16 matmuls, "
    "a LoRA run's frozen base in bfloat16), float32, bfloat16 or float16"
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes CUDA (this rank's GPU under torchrun) when available, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RlhfkitError(f"--device: expected {DEVICE_HELP}; got '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RlhfkitError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise RlhfkitError(f"--device: expected {DEVICE_HELP}; got '{name}'")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The parameter dtype for `name` on `device` (`auto`: bf16 on a bf16-capable GPU, else fp32)."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise RlhfkitError(f"--dtype: expected {DTYPE_HELP}; got '{name}'")
    return DTYPES[name]


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that multiply bf16 natively


def _cpuinfo(key: str) -> str | None:
    """The first `key : value` line's value in /proc/cpuinfo, or None (no such line, or not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), None)
    except OSError:
        return None


@functools.cache
def cpu_vendor() -> str | None:
    """/proc/cpuinfo's `vendor_id` (GenuineIntel, AuthenticAMD, ...), or None where there is none to read.
    Read once: kernel choices ask it per layer."""
    return _cpuinfo("vendor_id")


def cpu_native_bf16() -> str | None:
    """The /proc/cpuinfo flag that gives this CPU native bf16 matmuls (AMX or AVX512-BF16), or None: also
    None when oneDNN is kept below it (`ONEDNN_MAX_CPU_ISA=AVX2`, how an AVX2-only CPU is emulated)."""
    flags = (_cpuinfo("flags") or "").split()  # not Linux: no flags to read, so no claim of native bf16
    flag = next((f for f in NATIVE_BF16_FLAGS if f in flags), None)
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        supported = (
            bool(mkldnn._is_mkldnn_bf16_supported()) if torch.backends.mkldnn.is_available() else False
        )
    except (AttributeError, RuntimeError):
        supported = False
    return flag if supported else None


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for training forwards: bf16/fp16 autocast on CUDA, nothing elsewhere.

    Training keeps fp32 master weights and lets autocast run matmuls in half precision; on a CPU we do
    not autocast (slower than fp32 on most CPUs, and it would change the demo's numbers).
    """
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()
