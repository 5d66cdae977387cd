"""Linear layers with weights prepacked for oneDNN, the fast CPU matmul path for decode-sized batches.

Why: a decode step multiplies a small activation matrix (one row per sequence) by every weight matrix.
For such shapes PyTorch's default CPU GEMM spends much of its time re-laying out the weight on every call
(and on some CPUs dispatches to a slow generic kernel); measured here (AMD EPYC, fp32, 64 x 256 @ 256 x 768)
a weight prepacked once for oneDNN multiplies about 2x faster. The result is an fp32 matmul with a
different summation order (differences around 1e-6 relative), not a lower precision.
bf16 weights are packed too, but only where the CPU has native bf16 instructions (AVX512-BF16/AMX, what
`_is_mkldnn_bf16_supported` reports; an AVX2-only CPU has none): there the packed bf16 matmul reads half the
bytes of fp32 and ran about 2x faster than bf16 `F.linear` at batch 1 to 64 (AMD EPYC, AVX512-BF16), while
without native bf16 oneDNN would emulate it, so bf16 keeps `F.linear` there.

On Intel CPUs, MKL (`F.linear`) is the faster fp32 path for one or two rows (`_FEW_ROWS`): SmolLM2-135M's
greedy decode on a 2-core Xeon with AMX ran at 31.3 / 60.4 tok/s through MKL against 24.7 / 50.6 through the
packed weights at batch 1 / 2, while at 4 and 8 rows the packed ones won (93.6 vs 76.3, 147.3 vs 111.9); for
the demo models' 256-wide layers MKL took 5-14 us a call at 1-2 rows against 20-28 us. So on Intel a packed fp32
layer multiplies calls of one or two rows through MKL with its plain weight (`docs/performance.md`).

`torch.ops.mkldnn._reorder_linear_weight` / `_linear_pointwise` are the ops PyTorch's own compiler emits for
frozen CPU linears. They are internal, so this module probes them once and falls back to `F.linear` when
they are missing or disagree with it: the fallback is only slower, never wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhfkit.device import cpu_vendor

_PROBE_RESULT: dict[tuple[str, torch.dtype], bool] = {}
_FEW_ROWS = 2  # rows up to which MKL beats the packed fp32 weights on Intel CPUs (module doc)


def onednn_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether prepacked oneDNN linears work (and agree with `F.linear`) for this device and dtype."""
    key = (device.type, dtype)
    if key not in _PROBE_RESULT:
        _PROBE_RESULT[key] = _probe(device, dtype)
    return _PROBE_RESULT[key]


def _probe(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    try:
        if dtype == torch.bfloat16 and not ops._is_mkldnn_bf16_supported():
            return False
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, 2, 16, generator=gen).to(dtype)
        w = torch.randn(24, 16, generator=gen).to(dtype)
        b = torch.randn(24, generator=gen).to(dtype)
        with torch.inference_mode():
            packed = ops._reorder_linear_weight(w, 6)
            got = ops._linear_pointwise(x, packed, b, "none", [], "")
        rtol, atol = (1e-5, 1e-5) if dtype == torch.float32 else (2e-2, 1e-1)  # bf16: 8-bit mantissa
        return bool(torch.allclose(got.float(), F.linear(x, w, b).float(), rtol=rtol, atol=atol))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


class Linear:
    """`y = x @ weight.T + bias`, with the weight prepacked for oneDNN when that path is usable."""

    __slots__ = ("weight", "bias", "packed", "plain_rows")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch_hint: int, use_onednn: bool):
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, batch_hint) if use_onednn else None
        # Calls of up to this many rows take `F.linear` (MKL) instead: fp32 on an Intel CPU (module doc).
        intel = cpu_vendor() == "GenuineIntel"
        self.plain_rows = _FEW_ROWS if use_onednn and weight.dtype == torch.float32 and intel else 0

    def _plain(self, x: torch.Tensor) -> bool:
        return self.packed is None or x.numel() <= self.plain_rows * x.size(-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._plain(x):
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def plus(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`self(x) + other` (a residual connection); oneDNN adds `other` as the matmul's epilogue, one op
        instead of two, with the same rounding (the fp32 product is rounded, then the sum)."""
        if self._plain(x):
            return F.linear(x, self.weight, self.bias) + other
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, self.bias, "add")

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]
