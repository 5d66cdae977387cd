"""Log-probabilities of the chosen tokens and the (monitoring) entropy from one softmax over the vocabulary.

PPO's update needs log softmax(z)[chosen] with its gradient and logs the entropy of softmax(z) without one.
Computed separately (`logsumexp`, `softmax` for the entropy, and logsumexp's backward recomputing
exp(z - lse)) that is three exponentials over `[tokens, vocab]` plus the gather's zero-filled gradient; here
the probabilities are computed once, give both outputs, and are the backward's `onehot - p`. Same formulas
(max-shifted exponentials, lse = max + log sum), so the same numbers up to rounding.
"""

from __future__ import annotations

import torch


def chosen_logprobs(logits: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log softmax(logits)[i, chosen[i]] with gradient, entropy of softmax(logits) without) for `[N, V]` logits."""
    return _ChosenLogProbs.apply(logits, chosen)


class _ChosenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, chosen):
        peak = logits.amax(-1, keepdim=True)
        probs = (logits - peak).exp_()
        total = probs.sum(-1, keepdim=True)
        probs.div_(total)
        lse = (peak + total.log())[:, 0]
        logp = logits.gather(1, chosen[:, None])[:, 0] - lse
        entropy = lse - (probs * logits).sum(-1)
        ctx.save_for_backward(probs, chosen)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        probs, chosen = ctx.saved_tensors
        grad = probs * -grad_logp[:, None]  # d logp_i / d z_ij = [j == chosen_i] - p_ij
        grad.scatter_add_(1, chosen[:, None], grad_logp[:, None])
        return grad, None
