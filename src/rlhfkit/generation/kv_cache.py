"""The lean decoder's KV cache, and single-query attention over it as two `embedding_bag` calls.

Why (the `small` preset at batch 64 on one CPU core): a decode step's attention is 512 independent
(row, head) pairs of a 1 x head_dim query against up to a few hundred keys. As batched matmuls
(`baddbmm`/`bmm`, one tiny GEMM per pair) it took ~40% of a step at about a quarter of the memory bandwidth;
as elementwise products and sums it pays for a temporary as large as the cache. What one query needs is
two weighted sums of cache rows, which is exactly what `embedding_bag(mode="sum", per_sample_weights=...)`
computes in one fused, vectorized pass (fbgemm on x86) that reads each cache row once:

- scores: keys are stored transposed, one row per (row, KV head, dim) holding that dim's value at every
  position; a (row, query head)'s scores are the sum of its KV head's `head_dim` rows weighted by the query;
- output: values are stored one row per (row, KV head, position); the output is the sum of the rows at
  positions 0..length-1 weighted by the attention probabilities.

The query heads that share a KV head (grouped-query attention) just index that head's rows: no `repeat_kv`.

A key row spans the positions allocated so far (`capacity`), and the bag sums whole rows, so unwritten
positions cost reads (their scores are computed and dropped). Capacity therefore grows in steps of
`_CAPACITY_STEP` positions as the response grows (one copy each time) instead of spanning the whole call up
front: a 512-token limit does not make a 40-token answer read 550 positions per step. Keys start zeroed so
those dropped columns never hold stale data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CAPACITY_STEP = 32


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class KVCache:
    """Keys and values of every layer for `batch` rows, up to `total` positions.

    Layout per layer (`rows = batch * kv_heads`): keys `[rows, head_dim, capacity]` (transposed), values
    `[rows, total, head_dim]`; `bias` `[batch, total]` is added to the scores (0 or -inf for padding).
    """

    def __init__(
        self,
        layers: int,
        batch: int,
        kv_heads: int,
        heads: int,
        head_dim: int,
        total: int,
        bias: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.kv_heads, self.group, self.head_dim, self.total = kv_heads, heads // kv_heads, head_dim, total
        self.bias = bias
        rows = batch * kv_heads
        self.capacity = 0
        self.keys = [torch.zeros(rows, head_dim, 0, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(rows, total, head_dim, dtype=dtype, device=device) for _ in range(layers)]
        # Bag indices of the (row, query head) pairs, in transformers' `repeat_kv` order (KV head j serves
        # query heads j*group .. j*group+group-1): into the key rows, and the first value row of each.
        kv_row = torch.arange(rows, device=device).repeat_interleave(self.group)[:, None]
        self.key_index = kv_row * head_dim + torch.arange(head_dim, device=device)  # [rows * group, dim]
        self.value_start = kv_row * total  # [rows * group, 1]
        self._value_index: tuple[int, torch.Tensor] | None = None

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor, first_row: int = 0) -> None:
        """Store positions start.. of `k`, `v` ([rows, seq, kv_heads, head_dim]) for `layer`, batch rows
        first_row.. (a prefill may come in slices of rows)."""
        rows, seq = k.shape[:2]
        if start + seq > self.capacity:
            self._grow(start + seq)
        kept = slice(first_row, first_row + rows)
        keys = self.keys[layer].view(-1, self.kv_heads, self.head_dim, self.capacity)[kept]
        keys[..., start : start + seq].copy_(k.permute(0, 2, 3, 1))
        values = self.values[layer].view(-1, self.kv_heads, self.total, self.head_dim)[kept]
        values[:, :, start : start + seq].copy_(v.permute(0, 2, 1, 3))

    def zero_values(self, first_row: int, rows: int, stop: int) -> None:
        """Zero every layer's values at positions 0..stop-1 of batch rows first_row.. (positions a prefill
        skipped: their attention weight is 0, and 0 times the uninitialized memory could be NaN)."""
        if stop <= 0:
            return
        rows_of = slice(first_row, first_row + rows)
        for values in self.values:
            values.view(-1, self.kv_heads, self.total, self.head_dim)[rows_of, :, :stop].zero_()

    def attend(self, layer: int, q: torch.Tensor, length: int, scale: float) -> torch.Tensor:
        """Attention of one query per row (`q`: [batch, heads, head_dim]) to positions 0..length-1."""
        batch, heads, dim = q.shape
        pairs = batch * heads
        table = self.keys[layer].view(-1, self.capacity)
        scores = F.embedding_bag(
            self.key_index[:pairs], table, per_sample_weights=q.reshape(pairs, dim), mode="sum"
        )
        scores = scores.view(batch, heads, self.capacity)[..., :length]
        probs = torch.add(self.bias[:, None, :length], scores, alpha=scale).softmax(-1)
        table = self.values[layer].view(-1, dim)
        out = F.embedding_bag(
            self._values_up_to(length, pairs), table, per_sample_weights=probs.view(pairs, -1), mode="sum"
        )
        return out.view(batch, 1, heads * dim)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows in `rows` (a 1-D index tensor), in that order."""
        batch = self.bias.shape[0]
        self.keys = [k.view(batch, -1, *k.shape[1:]).index_select(0, rows).flatten(0, 1) for k in self.keys]
        self.values = [
            v.view(batch, -1, *v.shape[1:]).index_select(0, rows).flatten(0, 1) for v in self.values
        ]
        self.bias = self.bias.index_select(0, rows)
        # The bag indices depend on a row's place only, so those of the first rows stay valid.

    def _values_up_to(self, length: int, pairs: int) -> torch.Tensor:
        if self._value_index is None or self._value_index[0] != length:
            positions = torch.arange(length, device=self.value_start.device)
            self._value_index = (length, self.value_start + positions)  # shared by every layer of a step
        return self._value_index[1][:pairs]

    def _grow(self, needed: int) -> None:
        capacity = min(self.total, _round_up(needed, _CAPACITY_STEP))
        for i, old in enumerate(self.keys):
            new = old.new_zeros(*old.shape[:2], capacity)
            new[..., : self.capacity] = old
            self.keys[i] = new
        self.capacity = capacity
