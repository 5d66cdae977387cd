"""`y = x @ weight.T + bias` for training on a CPU: forward and backward matmuls through oneDNN.

Why (measured on the benchmark machine, AMD EPYC with AVX-512, 1 thread, fp32, a PPO minibatch's shapes
1046 x 256 -> 768 / 1376 / 4096 and 688 -> 256): PyTorch's CPU `mm` goes to MKL, which on this AMD CPU runs
at ~95-105 GFLOP/s, while oneDNN's inner-product kernel runs the same fp32 products at ~225-240 GFLOP/s
forward and ~175-200 GFLOP/s for forward + both backward products (`dX = dY @ W`, `dW = dY^T @ X`, each one
oneDNN call on contiguous operands). A training step of a small model is ~80% matmuls, so this is most of
its time. Under the AVX2-only emulation (`ONEDNN_MAX_CPU_ISA=AVX2`) both libraries run ~90-110 GFLOP/s.

Numerics: plain fp32 products in another summation order (~1e-7 relative), as `F.linear` would give on
another BLAS; no reduced precision (the probe checks the result against `F.linear`). Weights are passed
unpacked on every call (trained weights change every step, and oneDNN's own reorder is part of the call).
`torch.ops.mkldnn._linear_pointwise` is the op PyTorch's compiler emits for CPU linears; it is internal, so
`usable` probes it once and everything falls back to `F.linear` (slower, never wrong) when it is missing,
disagrees, or the call is not a float32 CPU matmul outside an autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_USABLE: dict[str, bool] = {}


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN (with its backward) where that is usable."""
    if not _applies(x, weight):
        return F.linear(x, weight, bias)
    shape = x.shape
    out = _OneDNNLinear.apply(x.reshape(-1, shape[-1]), weight, bias)
    return out.view(*shape[:-1], weight.size(0))


def usable() -> bool:
    """Whether oneDNN's fp32 inner product works here and agrees with `F.linear` (probed once)."""
    if "cpu" not in _USABLE:
        _USABLE["cpu"] = _probe()
    return _USABLE["cpu"]


def _applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and usable()
    )


def mm_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) with oneDNN; both operands contiguous (its primitive needs plain layouts)."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b.contiguous(), bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return mm_t(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = mm_t(grad, weight.t())  # dY @ W
        if ctx.needs_input_grad[1]:
            grad_w = mm_t(grad.t(), x.t())  # dY^T @ X
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def _probe() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or not hasattr(ops, "_linear_pointwise"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (
            torch.randn(5, 16, generator=gen),
            torch.randn(24, 16, generator=gen),
            torch.randn(24, generator=gen),
        )
        with torch.no_grad():
            got = mm_t(x, w, b)
        return bool(torch.allclose(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
