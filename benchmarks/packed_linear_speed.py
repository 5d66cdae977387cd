"""Does oneDNN weight packing pay on this CPU/ISA? `F.linear` vs `generation.packed_linear.Linear`.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/packed_linear_speed.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ... (AVX2-only emulation)

Times the matmuls of one decode step of a SmolLM2-135M-shaped Llama (30 layers of q/k/v, o, gate/up and
down projections, plus the 49,152 x 576 LM head) at 1, 8 and 64 rows, fp32 and bf16, each side the best of
5 repeats (weights cache-warm, so this ranks kernels rather than measuring memory bandwidth). `packed_ms` is
what the lean engine actually uses: packed where `onednn_usable` says so (bf16 only with native bf16
instructions), else the same `F.linear`. Prints JSON and writes docs/results/packed_linear_speed_<isa>.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cpu_info import cpu_info, isa_tag
from rlhfkit.generation.packed_linear import Linear, onednn_usable

SHAPES = [(576, 960, 30), (576, 576, 30), (576, 3072, 30), (1536, 576, 30), (576, 49152, 1)]  # in, out, count


def best_us(fn, n: int = 30) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    torch.manual_seed(0)
    rows_out = []
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            packs = onednn_usable(torch.device("cpu"), dtype)
            for rows in (1, 8, 64):
                plain = packed = 0.0
                for k, n, count in SHAPES:
                    w, x = torch.randn(n, k, dtype=dtype), torch.randn(rows, k, dtype=dtype)
                    lin = Linear(w, None, rows, packs)
                    plain += best_us(lambda w=w, x=x: F.linear(x, w)) * count
                    packed += best_us(lambda lin=lin, x=x: lin(x)) * count
                rows_out.append({"dtype": str(dtype).removeprefix("torch."), "rows": rows, "packed": packs,
                                 "F.linear_ms": round(plain / 1e3, 2), "packed_ms": round(packed / 1e3, 2)})  # fmt: skip
    summary = {"benchmark": "packed_linear_speed", "cpu": cpu_info(), "smollm2_step_matmuls": rows_out}
    out = (
        Path(__file__).resolve().parent.parent / "docs" / "results" / f"packed_linear_speed_{isa_tag()}.json"
    )
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
