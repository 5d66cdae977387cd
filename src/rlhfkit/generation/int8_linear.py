"""Weight-only int8 linear layers for decoding on the CPU (`--quantize int8`), through torch's own kernel.

Why: a decode step at small batch reads every weight once and does little with it, so its speed is the
memory bandwidth over the weights' bytes; int8 weights are a quarter of fp32's. Each output channel (row of
the weight) gets one scale, `max |w| / 127`, and its weights are rounded to the nearest multiple of it
(symmetric, per-channel: what llama.cpp's Q8_0 does per block of 32).

The kernel is `torch.ops.aten._weight_int8pack_mm` (int8 weights, bf16 activations on the CPU; its fp32 path
is a slow generic loop). So activations are rounded to bf16 on the way in and the product comes back in
bf16; the per-channel scales are applied afterwards in fp32 (passing them to the kernel would round them
to bf16 too). Measured on one core of an AMD EPYC (AVX-512), a 49152 x 576 layer: 1.3 ms against 3.7 ms
for the prepacked fp32 matmul at 1 row, 3.2 against 4.1 ms at 8 rows, but slower from about 10 rows on
(6.7 against 5.7 ms at 16): int8 pays for chat-sized batches, not for large ones.

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
    """`y = x @ (weight * scale).T + bias` with int8 `weight` and one fp32 `scale` per output channel."""

    __slots__ = ("weight", "scale", "bias", "_ones", "_pad")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self._pad = -w.shape[1] % _INNER_BLOCK if w.shape[1] % 16 else 0
        w = F.pad(w, (0, self._pad))
        self.weight = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale
        self.bias = None if bias is None else bias.detach().float()
        self._ones = torch.ones(self.weight.shape[0], dtype=torch.bfloat16)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        if self._pad:
            flat = F.pad(flat, (0, self._pad))
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self._ones).float() * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], -1).to(x.dtype)

    def plus(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`self(x) + other` (a residual connection)."""
        return self(x) + other

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]
