"""What the CLI says about the GPU: one line when CUDA runs out of memory, and the peak memory of a run.

Both stay out of the way until needed: neither imports torch unless a stage already did.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The env variable that makes `rlhfkit` write this process's peak CUDA memory (JSON) when the command ends;
# benchmarks/gpu_check.py sets it, since torch.cuda.max_memory_allocated only sees its own process.
PEAK_MEMORY_ENV = "RLHFKIT_PEAK_MEMORY_FILE"

# (argparse dest, what to suggest): the ways to make a stage fit, most effective first; a command gets
# only those it has a flag for.
FIT_HINTS = (
    ("micro_batch_size", "a smaller --micro-batch-size"),
    ("minibatch_size", "a smaller --minibatch-size"),
    ("forward_batch_size", "a smaller --forward-batch-size"),
    ("generation_batch_size", "a smaller --generation-batch-size"),
    ("gradient_checkpointing", "--gradient-checkpointing"),
    ("lora_r", "LoRA (--lora-r 16)"),
    ("dtype", "--dtype bfloat16"),
)


def is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # a stage that ran out of CUDA memory has imported torch
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return "CUDA error: out of memory" in str(exc)  # the same, reported by a CUDA library (cuBLAS, NCCL)


def out_of_memory_message(command: str, args: object, exc: BaseException) -> str:
    """One line: the command that ran out, torch's first line (what it tried to get), how to make it fit."""
    hints = [hint for dest, hint in FIT_HINTS if hasattr(args, dest)]
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "CUDA out of memory"
    fit = f"to make it fit, try {', '.join(hints)}" if hints else "try a smaller batch or model"
    return (
        f"`rlhfkit {command}` ran out of GPU memory ({detail.rstrip('.')}); {fit} "
        "(in a pipeline, as keys of the stage's --config table)"
    )


def write_peak_memory() -> None:
    """Write this process's peak CUDA memory to $RLHFKIT_PEAK_MEMORY_FILE (`.rankN` added under torchrun)."""
    path = os.environ.get(PEAK_MEMORY_ENV)
    torch = sys.modules.get("torch")
    if not path or torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        path = f"{path}.rank{os.environ.get('RANK', '0')}"
    report = {
        "device": torch.cuda.get_device_name(),
        "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(),
        "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(),
    }
    try:
        Path(path).write_text(json.dumps(report) + "\n")
    except OSError as exc:  # a report must never turn a finished run into a failed one
        print(f"rlhfkit: warning: cannot write the peak memory report {path}: {exc}", file=sys.stderr)
