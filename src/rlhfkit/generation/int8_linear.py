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

Measured on one core of an AMD EPYC (AVX-512), a 49152 x 576 layer: 1.3 ms against 3.7 ms for the
prepacked fp32 matmul at 1 row, 3.2 against 4.1 ms at 8 rows, but slower from about 10 rows on (6.7 against
5.7 ms at 16): int8 pays for chat-sized batches, not for large ones. Faster int8 kernels tried and not used
(activations in int8 through `torch._int_mm`, inductor's template): docs/performance.md.

The kernel reads its input in blocks along the inner dimension: with an inner size that is not a multiple
of 16 it returned garbage or crashed (torch 2.13, measured), so weights are zero-padded to a multiple of 32
there (a padded column adds 0), and so is the input of such a layer.

Only decoding uses these copies; the model's own fp32 weights stay as they are, so training is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

QUANTIZE = ("none", "int8")  # what `--quantize` accepts
_USABLE: dict[str, bool] = {}
_INNER_BLOCK = 32  # the inner size of a weight is padded to a multiple of this when it is not one of 16


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

    __slots__ = ("weight", "scale", "bias", "_pad")

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

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ (weight * scale).T` in bf16, shaped like `x` but for its last dimension."""
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        if self._pad:
            flat = F.pad(flat, (0, self._pad))
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
