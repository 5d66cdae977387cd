"""`y = x @ weight.T + bias` for training on a CPU: forward and backward matmuls through the faster library.

Why: which BLAS multiplies fp32 fastest depends on the CPU's vendor. PyTorch's CPU `mm` goes to MKL, and MKL
takes its fast kernels only on Intel CPUs. On AMD (EPYC Zen 4, AVX-512, 1 thread, a PPO minibatch's shapes
1046 x 256 -> 768 / 1376 / 4096 and 688 -> 256) MKL runs at ~95-105 GFLOP/s, while oneDNN's inner-product
kernel runs the same fp32 products at ~225-240 GFLOP/s forward and ~175-200 GFLOP/s for forward + both
backward products (`dX = dY @ W`, `dW = dY^T @ X`). On an Intel Xeon (Sapphire Rapids class, AMX) it is
the other way round: the same products and SmolLM2's take 1.2-1.5x longer through oneDNN than through MKL,
at 1 and 2 threads, with AVX-512 and under the AVX2-only emulation
(docs/results/intel_amx_training_2026-12-05.json, docs/performance.md). So fp32 products go through oneDNN
except on Intel CPUs (`usable`), where `linear` is `F.linear`. A training step of a small model is ~80%
matmuls, so this is most of its time. (How far apart the two libraries are depends on the machine: on a
slower 2.6 GHz Zen 4 VM, 2026-12-06, MKL came within 12% of oneDNN for the forward products,
docs/performance.md.)

The weight gradient is the exception on AMD too: `dW = dY^T @ X` sums over the tokens, the leading dimension of
both operands, and oneDNN's inner product wants it last, so it needed both copied transposed. Those copies
of a `[tokens, out]` gradient ran at 1-2 GB/s, and for pipeline pretraining's 8,192 tokens they were a
quarter of the step (the head's `[8192, 4096]` logit gradient alone: 97 ms of a 0.93 s step). MKL's `mm`
reads both operands transposed in place, and is 1.2-2.8x faster for this product at 1 and 2 threads and
at 1,046 and 8,192 tokens (AMD EPYC Zen 4, 2.6 GHz; `benchmarks/weight_grad.py`, docs/performance.md).

Numerics: plain fp32 products in another summation order (~1e-7 relative), as `F.linear` would give on
another BLAS; no reduced precision (the probe checks the result against `F.linear`). Weights are passed
unpacked on every call (trained weights change every step, and oneDNN's own reorder is part of the call).
`torch.ops.mkldnn._linear_pointwise` is the op PyTorch's compiler emits for CPU linears; it is internal, so
`onednn_works` probes it once and everything falls back to `F.linear` (slower, never wrong) when it is
missing, disagrees, or the call is not a float32 CPU matmul outside an autocast.

A frozen bf16 weight (a LoRA base under `train.precision`'s bf16) is multiplied by the fp32 activations
rounded to bf16, with oneDNN's fp32 accumulation (on any vendor: PyTorch's bf16 `mm` is oneDNN too), and
the result comes back in fp32 (the bias added in fp32); its backward gives only `dX`, rounded the same way.
That runs only where the CPU has native bf16 matmuls (`bf16_usable`: AVX512-BF16 or AMX, not emulated);
elsewhere the weight is widened to fp32 for the product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhfkit.device import cpu_vendor

_USABLE: dict[str, bool] = {}


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN (with its backward) where that is usable. `x` is cast to
    the weight's dtype, except that a frozen bf16 weight on fp32 activations gives fp32 (module doc)."""
    if x.dtype != weight.dtype:
        if weight.dtype == torch.bfloat16 and x.dtype == torch.float32 and not weight.requires_grad:
            return _frozen_bf16_linear(x, weight, bias)
        x = x.to(weight.dtype)  # as the layer's own forward would need it
    if not _applies(x, weight):
        return F.linear(x, weight, bias)
    shape = x.shape
    out = _OneDNNLinear.apply(x.reshape(-1, shape[-1]), weight, bias)
    return out.view(*shape[:-1], weight.size(0))


def usable() -> bool:
    """Whether fp32 products go through oneDNN here: it works (`onednn_works`) and the CPU is not an Intel
    one, whose MKL `F.linear` is the faster (module doc). Both are read once (every linear call asks)."""
    return onednn_works() and cpu_vendor() != "GenuineIntel"


def onednn_works() -> bool:
    """Whether oneDNN's fp32 inner product works here and agrees with `F.linear` (probed once)."""
    if "cpu" not in _USABLE:
        _USABLE["cpu"] = _probe()
    return _USABLE["cpu"]


def bf16_usable() -> bool:
    """Whether oneDNN multiplies bf16 natively here (AVX512-BF16 or AMX, not lowered by ONEDNN_MAX_CPU_ISA)
    and agrees with `F.linear` (probed once)."""
    if "bf16" not in _USABLE:
        _USABLE["bf16"] = onednn_works() and _probe(torch.bfloat16)
    return _USABLE["bf16"]


def _frozen_bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if not _bf16_applies(x):
        return F.linear(x, weight.float(), None if bias is None else bias.float())
    shape = x.shape
    out = _FrozenBf16Linear.apply(x.reshape(-1, shape[-1]), weight)
    out = out.view(*shape[:-1], weight.size(0))
    return out if bias is None else out + bias.float()


def _applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _fp32_cpu(x, weight) and usable()


def _fp32_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
    )


def _bf16_applies(x: torch.Tensor) -> bool:
    """Whether fp32 activations `x` may meet a frozen bf16 weight through oneDNN's native bf16 product."""
    return x.device.type == "cpu" and x.numel() > 0 and not torch.is_autocast_enabled("cpu") and bf16_usable()


def mm_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) with oneDNN; both operands contiguous (its primitive needs plain layouts)."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b.contiguous(), bias, "none", [], "")


def mm_tn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a.T @ b: a weight gradient `dY^T @ X`, summed over the tokens (`a`'s and `b`'s rows) with no
    transposed copies (module doc: faster than oneDNN on AMD as well)."""
    return torch.mm(a.t(), b)


def _fp32_mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T in fp32 through the faster library here (module doc): oneDNN, or MKL reading `b` transposed."""
    return mm_t(a, b) if usable() else torch.mm(a, b.t())


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
            grad_w = mm_tn(grad, x)  # dY^T @ X
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


class _FrozenBf16Linear(torch.autograd.Function):
    """x [T, in] fp32 @ W^T (W bf16, no gradient) -> fp32; saves only W (no weight gradient needs x)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        return mm_t(x.to(torch.bfloat16), weight).float()

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        # dY @ W as a plain matmul (oneDNN's bf16 GEMM behind torch.mm): no transposed copy of W per call.
        return torch.mm(grad.to(torch.bfloat16), weight).float(), None


def frozen_lora(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, down: torch.Tensor, up: torch.Tensor
) -> torch.Tensor | None:
    """`x W^T + b + (x A^T) B^T` for a frozen `weight` (fp32, or bf16 where the CPU multiplies it natively) and
    trained fp32 LoRA factors `down` (A, [R, in]) and `up` (B times the scaling, [out, R]), as one autograd
    node; fp32 in and out. None where that does not apply (not a CPU, an autocast, a bf16 weight without
    native bf16), so the caller keeps the plain side path. The fp32 products go through the faster library
    here (oneDNN, or MKL on Intel: module doc).

    Why: as separate layers the side path cost as much as the frozen matmuls' own backward in a SmolLM2 LoRA
    step. Its products are thin (R << in, out), so they are bound by reading the `[tokens, out]` gradient and
    the `[tokens, in]` input; as separate oneDNN calls they also copied both transposed, and their sum and
    `dX` were extra passes. Here the thin products read transposed operands in place (ATen's `mm`), and the
    side path's output and `dX` are added into the frozen product's own results (`addmm_`). Over a bf16 base
    it also shares the bf16 copies the frozen product makes anyway (the input rounded for the forward, the
    gradient for `dX`), so it reads half the bytes: what an autocast would do to the adapters, except that
    the factors' own gradients, the sums and everything outside the matmuls stay fp32.
    """
    if not (_bf16_applies(x) if weight.dtype == torch.bfloat16 else _fp32_cpu(x, weight)):
        return None
    shape = x.shape
    out = _FrozenLoraLinear.apply(x.reshape(-1, shape[-1]), weight, down, up)
    out = out.view(*shape[:-1], weight.size(0))
    return out if bias is None else out + bias.float()


class _FrozenLoraLinear(torch.autograd.Function):
    """x [T, in] fp32, W [out, in] frozen (fp32 or bf16), A [R, in] and B [out, R] fp32 -> fp32 [T, out]."""

    @staticmethod
    def forward(ctx, x, weight, down, up):
        xc, down_c = x.to(weight.dtype), down.to(weight.dtype)  # no copies over an fp32 base
        low = torch.mm(xc, down_c.t())  # [T, R]
        # The side path is added in fp32: while B is small (it starts at zero) its share of the sum is below
        # bf16's resolution, and rounding the sum to bf16 slowed learning (SmolLM2: +0.05 loss after 9 steps).
        frozen = mm_t(xc, weight).float() if weight.dtype == torch.bfloat16 else _fp32_mm_t(xc, weight)
        out = frozen.addmm_(low.float(), up.t())
        ctx.save_for_backward(xc, weight, down, up, low)
        return out

    @staticmethod
    def backward(ctx, grad):
        xc, weight, down, up, low = ctx.saved_tensors
        grad_c = grad.to(weight.dtype)
        grad_low = torch.mm(grad_c, up.to(weight.dtype))  # [T, R]
        grad_x = grad_down = grad_up = None
        if ctx.needs_input_grad[0]:  # dY W + dLow A, the small second term added in fp32 as in the forward
            if weight.dtype == torch.bfloat16:  # a plain bf16 matmul: no transposed copy of W per call
                grad_x = torch.mm(grad_c, weight).float()
            elif usable():
                # oneDNN over a transposed copy: still faster than MKL's fp32 `mm` on AMD (module doc)
                grad_x = mm_t(grad, weight.t())
            else:
                grad_x = torch.mm(grad, weight)
            grad_x.addmm_(grad_low.float(), down)
        if ctx.needs_input_grad[2]:
            grad_down = torch.mm(grad_low.t(), xc).float()  # [R, in]
        if ctx.needs_input_grad[3]:
            grad_up = torch.mm(grad_c.t(), low).float()  # [out, R]
        return grad_x, None, grad_down, grad_up


def _probe(dtype: torch.dtype = torch.float32) -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or not hasattr(ops, "_linear_pointwise"):
        return False
    try:
        # Without native bf16 instructions oneDNN would emulate bf16: slower than fp32, so not used.
        if dtype == torch.bfloat16 and not ops._is_mkldnn_bf16_supported():
            return False
        gen = torch.Generator().manual_seed(0)
        x, w, b = (
            torch.randn(5, 16, generator=gen).to(dtype),
            torch.randn(24, 16, generator=gen).to(dtype),
            torch.randn(24, generator=gen).to(dtype),
        )
        with torch.no_grad():
            got = mm_t(x, w, b).float()
        rtol, atol = (1e-5, 1e-5) if dtype == torch.float32 else (2e-2, 1e-1)  # bf16: 8-bit mantissa
        return bool(torch.allclose(got, F.linear(x, w, b).float(), rtol=rtol, atol=atol))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
