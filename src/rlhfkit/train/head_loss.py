"""Next-token log-probs fused with the LM head: `(h W^T)[label] - logsumexp(h W^T)` per token in one function.

Why: `F.cross_entropy(h @ W.T, y)` (or `log_softmax(...).gather(...)`) on a `[tokens, vocab]` logits matrix
makes autograd keep the logits, write a second tensor of the same size (log_softmax, or logsumexp's shifted
copy), zero a third one for the label gather's backward and read all of them back in the backward pass. On
the CPU those passes over memory cost about as much as a third of the head's matmuls (pipeline pretraining,
`tiny` model, 8,192 tokens x 4,096 vocab per step: 155 ms of plain cross-entropy against 66 ms here, 1
thread). The gradient of a token's log-prob with respect to its logits is simply `onehot(label) - softmax`,
so this function keeps only the logits and their log-sum-exp, and the backward turns the stored logits into
that gradient in place before the two matmuls it needs anyway. It also halves the memory a long-vocabulary
model (SmolLM2: 49,152) needs for the loss.

The passes over the logits (log-sum-exp, then the gradient) go a block of rows at a time, so each block is
read from cache, not memory, and no `[tokens, vocab]` temporary is ever allocated: a fresh one of SmolLM2's
size (300 tokens: 60 MB) costs more in page faults than its arithmetic.

A frozen bf16 head (a LoRA run's tied embeddings under `train.precision`'s bf16) is multiplied in bf16 with
fp32 accumulation where the CPU has it natively (`fast_linear.bf16_usable`). oneDNN returns those logits in
bf16, so they are kept in bf16 (half the bytes; widening them would add no precision) and each block is
widened to fp32 for the softmax; the log-sum-exp, the log-probs and the loss are fp32, the gradient is
rounded to bf16 only for the bf16 matmul that takes it, and the backward gives only the hidden states'.

The math is the same as `log_softmax(...).gather(...)` and `F.cross_entropy(..., reduction="sum")`; only the
float summation order differs (within ~1e-6 relative, tests/test_head_loss.py).
"""

from __future__ import annotations

import torch

from rlhfkit.train import fast_linear

_BLOCK_NUMBERS = 1 << 19  # logits per block of rows (2 MB in fp32: about one core's L2 cache)


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T through the faster CPU library here (`fast_linear.usable`: oneDNN on AMD, MKL on Intel; a GPU's
    own matmul elsewhere); a bf16 `b` multiplies `a` rounded to bf16, accumulating in fp32 and returning bf16."""
    a = a.to(b.dtype)
    return fast_linear.mm_t(a, b) if a.device.type == "cpu" and fast_linear.usable() else a @ b.t()


def _row_blocks(logits: torch.Tensor):
    rows = max(1, _BLOCK_NUMBERS // max(logits.size(1), 1))
    for start in range(0, logits.size(0), rows):
        yield slice(start, start + rows)


class _LinearTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = _mm_t(hidden, weight)  # fp32, or bf16 over a bf16 head
        lse = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)
        for rows in _row_blocks(logits):
            torch.logsumexp(logits[rows].float(), dim=-1, out=lse[rows])
        logp = logits.gather(1, labels[:, None])[:, 0].float() - lse
        ctx.save_for_backward(hidden, weight, labels, logits, lse)
        return logp

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor):
        hidden, weight, labels, logits, lse = ctx.saved_tensors
        # g * (onehot - softmax), written over the stored logits block by block (they are not needed again:
        # one backward per graph).
        for rows in _row_blocks(logits):
            block, g = logits[rows], grad_logp[rows]
            probs = block.float().sub_(lse[rows, None]).exp_().mul_(-g[:, None])
            probs.scatter_add_(1, labels[rows, None], g[:, None])
            block.copy_(probs)
        grad_logits = logits
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0] and weight.dtype == torch.bfloat16:
            # dLogits @ W as a plain bf16 matmul: no transposed copy of the 49k-row head on every step.
            grad_hidden = torch.mm(grad_logits, weight).float()
        elif ctx.needs_input_grad[0]:
            grad_hidden = _mm_t(grad_logits, weight.t())
        if ctx.needs_input_grad[1]:
            grad_weight = fast_linear.mm_tn(grad_logits, hidden)
        return grad_hidden, grad_weight, None


def fusable(hidden: torch.Tensor, head: torch.nn.Module) -> bool:
    """Whether `head` can be fused with the log-probs: a plain bias-free `nn.Linear` on float32 hidden states
    outside autocast, with fp32 weights or a frozen bf16 one the CPU multiplies natively."""
    if type(head) is not torch.nn.Linear or head.bias is not None or hidden.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled(hidden.device.type):
        return False
    weight = head.weight
    frozen_bf16 = weight.dtype == torch.bfloat16 and not weight.requires_grad and fast_linear.bf16_usable()
    return weight.dtype == torch.float32 or frozen_bf16


def logprobs_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`[N]` log softmax(logits)[i, labels[i]] in fp32, the plain way (for logits some model already made)."""
    logits = logits.float()
    return logits.gather(1, labels[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)


def linear_token_logprobs(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """`[N]` log softmax(head(hidden))[i, labels[i]] (fp32, every label a real token), fused where `fusable`;
    anything else (a bias, a LoRA-wrapped head, bf16 autocast on a GPU) takes the plain log-softmax path."""
    if fusable(hidden, head):
        return _LinearTokenLogprobs.apply(hidden, head.weight, labels)
    return logprobs_of(head(hidden.to(head.weight.dtype)), labels)


def linear_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` [N, vocab] against `labels` [N] (every label a real token)."""
    return -linear_token_logprobs(hidden, head, labels).sum()
