"""The lean decoder's KV cache: single-query attention equals SDPA, through capacity growth and row drops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.generation import SamplingParams, generate, lean_llama
from rlhfkit.generation.kv_cache import _CAPACITY_STEP, KVCache
from test_generation import PAD, hf_generate, left_padded, llama, prompts


def sdpa_reference(keys, values, q, valid, scale):
    """One query per row with transformers' repeat_kv expansion: keys/values [batch, kv, len, dim]."""
    group = q.shape[1] // keys.shape[1]
    k, v = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
    mask = valid[:, None, None, :]  # [batch, 1, 1, len]
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=scale)
    return out.flatten(1)  # [batch, heads * dim]


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention_equals_sdpa_as_the_cache_grows_and_drops_rows(kv_heads):
    gen = torch.Generator().manual_seed(0)
    batch, heads, dim, layers = 5, 4, 8, 2
    total = 2 * _CAPACITY_STEP + 7  # crosses two capacity steps
    valid = torch.ones(batch, total, dtype=torch.bool)
    valid[1, :3] = valid[3, :5] = False  # left padding
    bias = torch.zeros(batch, total).masked_fill(~valid, -torch.inf)
    cache = KVCache(layers, batch, kv_heads, heads, dim, total, bias, torch.float32, torch.device("cpu"))
    keys = torch.randn(layers, batch, total, kv_heads, dim, generator=gen)
    values = torch.randn(layers, batch, total, kv_heads, dim, generator=gen)
    prompt = 6
    for layer in range(layers):  # a prefill writes several positions at once
        cache.write(layer, 0, keys[layer, :, :prompt], values[layer, :, :prompt])
    rows = torch.arange(batch)
    capacities = set()
    for t in range(prompt, total):
        if t == _CAPACITY_STEP + 3:  # drop rows 0 and 2 after the first growth
            kept = torch.tensor([1, 3, 4])
            cache.keep(kept)
            rows = rows[kept]
        for layer in range(layers):
            cache.write(layer, t, keys[layer, rows, t : t + 1], values[layer, rows, t : t + 1])
            q = torch.randn(len(rows), heads, dim, generator=gen)
            got = cache.attend(layer, q, t + 1, dim**-0.5)[:, 0]
            k = keys[layer, rows, : t + 1].transpose(1, 2)
            v = values[layer, rows, : t + 1].transpose(1, 2)
            expected = sdpa_reference(k, v, q, valid[rows, : t + 1], dim**-0.5)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        capacities.add(cache.capacity)
    assert sorted(capacities) == [
        _CAPACITY_STEP,
        2 * _CAPACITY_STEP,
        total,
    ]  # grew in steps, never past total


def test_long_generation_with_dropped_rows_equals_transformers():
    model = llama(kv_heads=2)
    batch = prompts(lengths=(5, 9, 3, 12, 7, 1, 4, 6))
    new_tokens = 3 * _CAPACITY_STEP
    free = hf_generate(model, batch, new_tokens)
    stops = sorted({free[row][40 + 5 * row] for row in range(5)})  # rows end after the cache has grown
    expected = hf_generate(model, batch, new_tokens, eos_token_id=stops)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, stop_token_ids=stops)
    got = generate(model, batch, params, pad_token_id=PAD, backend="lean")
    assert [c.token_ids for c in got] == expected
    assert len({len(row) for row in expected}) > 2


def test_prefill_in_row_slices_gives_the_same_logits_and_tokens(monkeypatch):
    model = llama(kv_heads=2)
    batch = prompts(lengths=(5, 9, 3, 12, 7, 1, 4, 6))
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), PAD)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(batch):
        ids[row, width - len(p) :], mask[row, width - len(p) :] = torch.tensor(p), 1
    with torch.inference_mode():
        whole = lean_llama.LeanLlama(model, len(batch)).prefill(ids, mask, 4)
        monkeypatch.setattr(lean_llama, "_PREFILL_TOKENS", 3 * width)  # slices of 3, 3 and 2 rows
        sliced = lean_llama.LeanLlama(model, len(batch)).prefill(ids, mask, 4)
    # Equal up to the kernel: a slice's last layer multiplies 1-3 rows, which on an Intel CPU go through MKL
    # instead of the packed weights (`packed_linear`), in another summation order.
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-5)
    got = generate(model, batch, SamplingParams(max_new_tokens=20, temperature=0), pad_token_id=PAD)
    assert [c.token_ids for c in got] == hf_generate(model, batch, 20)


def test_prefill_skips_shared_left_padding_and_leaves_finite_values(monkeypatch):
    # Slices hold consecutive rows up to _PREFILL_TOKENS tokens of their longest row, never less than one row.
    assert lean_llama._prefill_slices([200, 90, 40, 30, 20, 300]) == [
        (0, 1, 200),
        (1, 2, 90),
        (3, 2, 30),
        (5, 1, 300),
    ]
    model = llama(kv_heads=2)
    batch = prompts(lengths=(40, 3, 12, 1, 25, 7))
    ids, mask = left_padded(batch)
    init = KVCache.__init__

    def poisoned(self, *args, **kwargs):  # uninitialized memory may hold NaN: the skipped columns must not
        init(self, *args, **kwargs)
        for values in self.values:
            values.fill_(float("nan"))

    monkeypatch.setattr(lean_llama, "_PREFILL_TOKENS", 40)
    monkeypatch.setattr(KVCache, "__init__", poisoned)
    with torch.inference_mode():
        together = lean_llama.LeanLlama(model, len(batch)).prefill(ids, mask, 4)
        alone = torch.cat([lean_llama.LeanLlama(model, 1).prefill(*left_padded([p]), 4) for p in batch])
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    got = generate(model, batch, SamplingParams(max_new_tokens=12, temperature=0), pad_token_id=PAD)
    assert [c.token_ids for c in got] == hf_generate(model, batch, 12)
