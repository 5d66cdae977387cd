"""Weight-only int8 linear layers for decoding on the CPU (`--quantize int8`), through torch's own kernel.

Why: a decode step at small batch reads every weight once and does little with it, so its speed is the
memory bandwidth over the weights' bytes; int8 weights are a quarter of fp32's. Each output channel (row of
the weight) gets one scale, `max |w| / 127`, and its weights are rounded to the nearest multiple of it
(symmetric, per-channel: what llama.cpp's Q8_0 does per block of 32).

The kernel is `torch.ops.aten._weight_int8pack_mm` (int8 weights, bf16 activations on the CPU; its fp32 path
is a slow generic loop). So activations are rounded to bf16 on the way in and the product comes back in
bf16. The kernel multiplies its fp32 sums by the per-channel scales before it rounds them (checked: the
result equals `bf16(fp32 sums * scale)` exactly), so each scale is itself made a bf16 number (the weights are
rounded to multiples of that exact value) and handed to the kernel: the product then needs no fp32 pass
of its own, and a residual connection adds the bf16 product straight into the fp32 stream (two small ops
fewer per layer; ~180 a decode step of a 30-layer model).

That kernel is a matrix-vector product per row: it reads every weight again for each row, so it is the
faster one for a row or two and falls far behind from a few rows on (SmolLM2-135M's 121 layers on 2 cores of a
Zen 4: 12.6 ms at 2 rows, 28 ms at 8, 154 ms at 64). So from `WIDE_ROWS` rows on, where the CPU multiplies
bf16 natively, a layer multiplies by a oneDNN-packed bf16 copy of the same int8 integers (exact in bf16:
at most 8 significant bits) with the scale applied as the matmul's `mul` epilogue, in fp32 before the one
rounding to bf16, as the int8 kernel does: the same sums in another order. Measured, 99.9% of the outputs
equal the int8 kernel's bit for bit and the rest differ by one bf16 rounding; 17 ms at 8 rows, 53 ms at 64
(fp32's packed weights: 26 ms at 8). The copy costs two more bytes per weight; the model's own fp32 weights
are still held anyway. Faster int8 kernels tried and not used (activations in int8 through `torch._int_mm`,
inductor's template): docs/performance.md.

The kernel reads its input in blocks along the inner dimension: with an inner size that is not a multiple
of 16 it returned garbage or crashed (torch 2.13, measured), so weights are zero-padded to a multiple of 32
there (a padded column adds 0), and so is the input of such a layer.

Only decoding uses these copies; the model's own fp32 weights stay as they are, so training is exact.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.packed_linear import onednn_usable

QUANTIZE = ("none", "int8")  # what `--quantize` accepts
_USABLE: dict[str, bool] = {}
_INNER_BLOCK = 32  # the inner size of a weight is padded to a multiple of this when it is not one of 16
WIDE_ROWS = 4  # calls of this many rows or more take the packed bf16 copy, where there is one (module doc)
_WIDE_HINT = 16  # the batch size oneDNN lays the bf16 copy out for


def require_quantize(value: str, option: str) -> None:
    """Refuse a `--quantize`-style value that is not one of `QUANTIZE`, in one line naming `option`."""
    if value not in QUANTIZE:
        raise RlhfkitError(f"{option}: expected one of {', '.join(QUANTIZE)}, got '{value}'")


def warn_if_rows_are_slow(option: str) -> None:
    """Say on stderr that int8 is slower than fp32 for many rows here (no bf16 copy: module doc)."""
    if not onednn_usable(torch.device("cpu"), torch.bfloat16):
        print(
            f"{option} int8: this CPU has no native bf16, so int8 multiplies each row on its own; batches of"
            " many rows decode slower than in fp32 (0.64x at 64 rows, measured under AVX2)",
            file=sys.stderr,
            flush=True,
        )


def int8_usable() -> bool:
    """Whether this torch has the int8 weight kernel on the CPU (probed once on a tiny case)."""
    if "cpu" not in _USABLE:
        try:
            gen = torch.Generator().manual_seed(0)
            layer = Int8Linear(torch.randn(8, 32, generator=gen), None)
            x = torch.randn(2, 32, generator=gen)
            expected = x @ (layer.weight.float() * layer.scale[:, None]).T
            _USABLE["cpu"] = bool(torch.allclose(layer(x), expected, rtol=0.05, atol=0.05))
        except (RuntimeError, NotImplementedError, AttributeError):
            _USABLE["cpu"] = False
    return _USABLE["cpu"]


class Int8Linear:
    """`y = x @ (weight * scale).T + bias` with int8 `weight` and one bf16 `scale` per output channel."""

    __slots__ = ("weight", "scale", "bias", "_pad", "_wide", "_scale_row")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        w = weight.detach().float()
        tiny = torch.finfo(torch.bfloat16).tiny
        # A bf16 scale, so that the kernel applies it exactly. Rounded to nearest, it may sit a hair below
        # max |w| / 127; the channel's largest weight then clamps to 127, off by less than a rounding step.
        scale = (w.abs().amax(dim=1) / 127).clamp(min=tiny).to(torch.bfloat16)
        self._pad = -w.shape[1] % _INNER_BLOCK if w.shape[1] % 16 else 0
        w = F.pad(w, (0, self._pad))
        self.weight = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale
        self.bias = None if bias is None else bias.detach().float()
        # The same integers as bf16 for calls of several rows, only where bf16 is native (oneDNN would
        # emulate it otherwise, slower than the int8 kernel).
        wide = onednn_usable(torch.device("cpu"), torch.bfloat16) and self.weight.device.type == "cpu"
        self._wide = (
            torch.ops.mkldnn._reorder_linear_weight(self.weight.to(torch.bfloat16), _WIDE_HINT)
            if wide
            else None
        )
        self._scale_row = scale[None]  # [1, out]: the epilogue broadcasts it over the rows

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ (weight * scale).T` in bf16, shaped like `x` but for its last dimension."""
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        if self._pad:
            flat = F.pad(flat, (0, self._pad))
        if self._wide is not None and flat.shape[0] >= WIDE_ROWS:
            y = torch.ops.mkldnn._linear_pointwise.binary(flat, self._scale_row, self._wide, None, "mul")
        else:
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scale)
        return y.view(*x.shape[:-1], -1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._product(x)
        if self.bias is not None:
            return (y + self.bias).to(x.dtype)
        return y.to(x.dtype)

    def plus(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`self(x) + other` (a residual connection): the bf16 product is added into `other`'s dtype."""
        y = self._product(x)
        if self.bias is not None:
            y = y + self.bias
        return other + y

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]
