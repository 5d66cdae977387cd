"""The decode engine's linear layers: oneDNN-packed weights, and MKL for one or two rows on Intel CPUs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.generation import packed_linear

pytestmark = pytest.mark.skipif(
    not packed_linear.onednn_usable(torch.device("cpu"), torch.float32), reason="no usable oneDNN fp32 linear"
)


def _counting(monkeypatch) -> list[int]:
    rows = []

    def linear(x, weight, bias=None):
        rows.append(x.numel() // x.size(-1))
        return F.linear(x, weight, bias)

    monkeypatch.setattr(packed_linear, "F", SimpleNamespace(linear=linear))
    return rows


@pytest.mark.parametrize(("vendor", "plain"), [("GenuineIntel", [1, 2]), ("AuthenticAMD", [])])
def test_few_rows_take_mkl_on_intel_only_and_every_path_gives_the_same_product(monkeypatch, vendor, plain):
    monkeypatch.setattr(packed_linear, "cpu_vendor", lambda: vendor)
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(48, 32, generator=gen), torch.randn(48, generator=gen)
    lin = packed_linear.Linear(w, b, 8, True)
    rows = _counting(monkeypatch)
    for n in (1, 2, 3, 8):
        x, other = torch.randn(n, 1, 32, generator=gen), torch.randn(n, 1, 48, generator=gen)
        torch.testing.assert_close(lin(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lin.plus(x, other), F.linear(x, w, b) + other, rtol=1e-5, atol=1e-5)
    assert rows == [n for n in plain for _ in range(2)]  # a call and a `plus` per row count


def test_bf16_weights_stay_packed_on_intel(monkeypatch):
    if not packed_linear.onednn_usable(torch.device("cpu"), torch.bfloat16):
        pytest.skip("no native bf16 here")
    monkeypatch.setattr(packed_linear, "cpu_vendor", lambda: "GenuineIntel")
    lin = packed_linear.Linear(torch.randn(48, 32).bfloat16(), None, 8, True)
    rows = _counting(monkeypatch)
    lin(torch.randn(1, 32).bfloat16())
    assert rows == []
