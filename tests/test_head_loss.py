"""The fused LM-head cross-entropy equals the plain one: loss and gradients, and through `lm_loss`."""

import torch
import torch.nn.functional as F

from rlhfkit.models import build_model
from rlhfkit.train.head_loss import linear_cross_entropy
from rlhfkit.train.loop import lm_loss


def _plain_and_fused(head: torch.nn.Linear, hidden: torch.Tensor, labels: torch.Tensor):
    out = []
    for fused in (False, True):
        h = hidden.clone().requires_grad_()
        head.zero_grad(set_to_none=True)
        if fused:
            loss = linear_cross_entropy(h, head, labels)
        else:
            loss = F.cross_entropy(head(h), labels, reduction="sum")
        (loss * 0.5).backward()  # a non-unit upstream gradient, as `loss / count` gives
        out.append((loss.detach(), h.grad, head.weight.grad.clone()))
    return out


def test_fused_loss_and_gradients_equal_plain_cross_entropy():
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 300, bias=False)
    hidden, labels = torch.randn(50, 32), torch.randint(0, 300, (50,))
    (loss_a, gh_a, gw_a), (loss_b, gh_b, gw_b) = _plain_and_fused(head, hidden, labels)
    assert torch.allclose(loss_a, loss_b, rtol=1e-6)
    assert torch.allclose(gh_a, gh_b, atol=1e-6)
    assert torch.allclose(gw_a, gw_b, atol=1e-6)


def test_head_with_bias_takes_the_plain_path_and_is_still_right():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=True)
    hidden, labels = torch.randn(8, 16), torch.randint(0, 40, (8,))
    expected = F.cross_entropy(head(hidden), labels, reduction="sum")
    assert torch.allclose(linear_cross_entropy(hidden, head, labels), expected)


def test_lm_loss_matches_the_models_own_forward_for_pretraining_and_sft_labels():
    model = build_model("tiny", 256, 64, seed=0)
    x = torch.randint(0, 256, (3, 17), generator=torch.Generator().manual_seed(1))
    labels = x[:, 1:].clone()
    for masked in (False, True):  # pretraining (every label) and SFT (prompt positions ignored)
        if masked:
            labels[:, :6] = -100
        batch = {"input_ids": x[:, :-1], "labels": labels}
        model.zero_grad(set_to_none=True)
        loss, count, _ = lm_loss(model, batch)
        loss.backward()
        fused_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=x[:, :-1]).logits
        expected = F.cross_entropy(
            logits.reshape(-1, 256), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        expected.backward()
        assert count == (labels != -100).sum()
        assert torch.allclose(loss, expected, rtol=1e-5)
        for got, want in zip(fused_grads, (p.grad for p in model.parameters())):
            assert torch.allclose(got, want, atol=1e-5)
