"""Next-token cross-entropy fused with the LM head: `sum(logsumexp(h W^T) - (h W^T)[label])` in one function.

Why: `F.cross_entropy(h @ W.T, y)` on a `[tokens, vocab]` logits matrix makes autograd keep the logits, write a
second tensor of the same size (log_softmax), zero a third one for the label gather's backward and read all
of them back in the backward pass. On the CPU those passes over memory cost about as much as a third of the
head's matmuls (pipeline pretraining, `tiny` model, 8,192 tokens x 4,096 vocab per step: 155 ms of plain
cross-entropy against 66 ms here, 1 thread). The gradient of the loss with respect to the logits is simply
`softmax - onehot(label)`, so this function keeps only the logits and their log-sum-exp, and the backward
turns the stored logits into that gradient in place before the two matmuls it needs anyway. It also halves
the memory a long-vocabulary model (SmolLM2: 49,152) needs for the loss.

The math is the same as `F.cross_entropy(..., reduction="sum")`; only the float summation order differs
(loss within ~1e-7 relative, gradients within ~1e-6, tests/test_head_loss.py).

A frozen bf16 head (a LoRA run's tied embeddings under `train.precision`'s bf16) is multiplied in bf16 with
fp32 accumulation where the CPU has it natively (`fast_linear.bf16_usable`); the logits, their softmax and
the loss stay fp32, and the backward gives only the hidden states' gradient.
"""

from __future__ import annotations

import torch

from rlhfkit.train import fast_linear


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T in fp32: through oneDNN where it is usable (about 2x MKL's fp32 rate with AVX-512,
    `train.fast_linear`); a bf16 `b` multiplies `a` rounded to bf16, accumulating in fp32."""
    a = a.to(b.dtype)
    return (fast_linear.mm_t(a, b) if fast_linear.usable() else a @ b.t()).float()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = _mm_t(hidden, weight)
        lse = torch.logsumexp(logits, dim=-1)
        loss = (lse - logits.gather(1, labels[:, None]).squeeze(1)).sum()
        ctx.save_for_backward(hidden, weight, labels, logits, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        hidden, weight, labels, logits, lse = ctx.saved_tensors
        # softmax - onehot, written over the stored logits (they are not needed again: one backward per graph).
        grad_logits = logits.sub_(lse[:, None]).exp_()
        grad_logits[torch.arange(labels.numel(), device=labels.device), labels] -= 1
        grad_logits.mul_(grad_loss)
        grad_hidden = None
        if ctx.needs_input_grad[0] and weight.dtype == torch.bfloat16:
            # dLogits @ W as a plain bf16 matmul: no transposed copy of the 49k-row head on every step.
            grad_hidden = torch.mm(grad_logits.to(weight.dtype), weight).float()
        elif ctx.needs_input_grad[0]:
            grad_hidden = _mm_t(grad_logits, weight.t())
        grad_weight = _mm_t(grad_logits.t(), hidden.t()) if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, None


def linear_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` [N, vocab] against `labels` [N] (every label a real token).

    Fused when `head` is a plain bias-free `nn.Linear` on float32 tensors outside autocast; anything else (a
    bias, a LoRA-wrapped head, bf16 autocast on a GPU) takes the plain `F.cross_entropy` path.
    """
    weight = head.weight
    frozen_bf16 = weight.dtype == torch.bfloat16 and not weight.requires_grad and fast_linear.bf16_usable()
    fusable = (
        type(head) is torch.nn.Linear
        and head.bias is None
        and hidden.dtype == torch.float32
        and (weight.dtype == torch.float32 or frozen_bf16)
        and not torch.is_autocast_enabled(hidden.device.type)
    )
    if fusable:
        return _LinearCrossEntropy.apply(hidden, head.weight, labels)
    logits = head(hidden.to(head.weight.dtype))
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
