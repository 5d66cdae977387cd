"""The CPU a benchmark ran on, printed by every benchmark so a number always names its machine.

`cpu_info()` returns the model name, the SIMD flags that decide which kernels run (avx2, avx512*, amx*),
what torch actually dispatches to (`ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA` can lower it below the
hardware's, which is how an AVX2-only CPU is emulated), the cores this process may use and torch's threads.
"""

from __future__ import annotations

import os
import platform

import torch

ISA_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "FBGEMM_ENABLE_INSTRUCTIONS",
)


def _proc_cpuinfo() -> tuple[str, list[str]]:
    name, flags = "", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:  # not Linux: the name from platform, no flags
        pass
    return name or platform.processor() or platform.machine(), flags


def cpu_info() -> dict:
    name, flags = _proc_cpuinfo()
    simd = sorted(f for f in flags if f == "avx2" or f.startswith(("avx512", "amx", "avx_vnni", "fma")))
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": name,
        "isa_flags": simd,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
        "cores_available": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def isa_tag() -> str:
    """'avx512' or 'avx2' (what torch dispatches to), for result file names; 'avx512_amx' where the CPU also
    has AMX and oneDNN may use it (an Intel Xeon's bf16 matmuls are a different class from Zen 4's)."""
    tag = torch.backends.cpu.get_cpu_capability().lower()
    lowered = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() not in ("", "ALL", "AVX512_CORE_AMX")
    if tag == "avx512" and "amx_bf16" in _proc_cpuinfo()[1] and not lowered:
        tag += "_amx"
    return tag
