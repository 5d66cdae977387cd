"""A KV cache pool of fixed slots for continuous batching: rows join and leave between decode steps.

Why slots: in a batch that runs to completion every row starts together, so every row writes the same
position (`kv_cache.KVCache`). When requests join a running batch, each row is at its own position, and a
finished row's memory must be reused by the next newcomer without copying the others. So the pool holds
`slots` sequences side by side, each with its own length; a decode step runs any subset of slots, each
writing its new key and value at its own position and attending to its own prefix.

Layout (per layer, as in `KVCache`, so attention is the same two `embedding_bag` weighted sums): keys
`[slots * kv_heads, head_dim, capacity]` (transposed), values `[slots * kv_heads, capacity, head_dim]`.
`capacity` is shared by all slots and grows in steps of `_CAPACITY_STEP` positions as the longest live row
needs; the number of slots allocated grows in steps of `_SLOT_STEP` as rows join (one copy each time); both
drop to 0 when the pool empties, so the memory follows the load and an idle server holds no cache.

Positions past a row's length are masked with -inf in the scores. Their values are multiplied by a zero
probability, so they must be finite: the pool starts zeroed, and a reused slot's stale values are finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhfkit.generation.kv_cache import KVCache

_CAPACITY_STEP = 128  # larger than KVCache's: a growth copies every slot, not one batch
_SLOT_STEP = 8


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class SlotKVCache:
    """Keys and values of every layer for up to `max_slots` independent sequences.

    Use: `load` a prefilled sequence into a slot (below `max_slots`; the pool grows to hold it); before each decode step `begin_step(slots,
    positions)` names the rows of the step (slot indices) and the position each writes; then the decoder
    calls `write` and `attend` per layer exactly as on a `KVCache` (their `start` / `length` arguments are
    ignored: each row's position comes from `begin_step`).
    """

    def __init__(
        self,
        layers: int,
        max_slots: int,
        kv_heads: int,
        heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.layers, self.max_slots, self.kv_heads, self.head_dim = layers, max_slots, kv_heads, head_dim
        self.group = heads // kv_heads
        self.dtype, self.device = dtype, device
        self.slots = self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # KV row of each (slot, query head) pair, in transformers' `repeat_kv` order: [max_slots, heads].
        self.kv_row = torch.arange(max_slots * kv_heads, device=device).repeat_interleave(self.group)
        self.kv_row = self.kv_row.view(max_slots, heads)
        self._allocate(0, 0)

    def reset(self) -> None:
        """Free the memory (call when no slot is live)."""
        self._allocate(0, 0)

    def load(self, slot: int, source: KVCache, length: int, row: int = 0, start: int = 0) -> None:
        """Copy a prefilled sequence into `slot`: row `row` of the `KVCache`, whose positions 0..length-1 sit
        in its columns start..start+length-1 (`start`: the row's left padding in a batched prefill)."""
        if slot >= self.slots:
            self._allocate(min(self.max_slots, _round_up(slot + 1, _SLOT_STEP)), self.capacity)
        self.ensure(length)
        rows = slice(slot * self.kv_heads, (slot + 1) * self.kv_heads)
        held = slice(row * self.kv_heads, (row + 1) * self.kv_heads)
        columns = slice(start, start + length)
        for layer in range(self.layers):
            self.keys[layer][rows, :, :length].copy_(source.keys[layer][held, :, columns])
            self.values[layer][rows, :length].copy_(source.values[layer][held, columns])

    def ensure(self, needed: int) -> None:
        """Room for `needed` positions in every slot."""
        if needed > self.capacity:
            self._allocate(self.slots, _round_up(needed, _CAPACITY_STEP))

    def begin_step(self, slots: torch.Tensor, positions: torch.Tensor) -> None:
        """The next step's rows: `slots[r]` writes position `positions[r]` and attends to 0..positions[r]."""
        length = int(positions.max()) + 1
        if int(slots.max()) >= self.slots:
            self._allocate(min(self.max_slots, _round_up(int(slots.max()) + 1, _SLOT_STEP)), self.capacity)
        self.ensure(length)
        self._length = length
        # Where each row's new key and value go in a layer's flattened tables, shared by every layer: one
        # `index_copy_` per table and layer instead of advanced-index assignment (its index arithmetic,
        # redone per call, cost more than the copy: ~0.3 ms a step of SmolLM2).
        kv = slots[:, None] * self.kv_heads + torch.arange(self.kv_heads, device=self.device)  # [rows, kv]
        dims = torch.arange(self.head_dim, device=self.device)
        at = positions[:, None, None]
        self._key_slots = ((kv[..., None] * self.head_dim + dims) * self.capacity + at).flatten()
        self._value_slots = ((kv[..., None] * self.capacity + at) * self.head_dim + dims).flatten()
        pairs = self.kv_row[slots].reshape(-1, 1)  # [rows * heads, 1]
        self._key_index = pairs * self.head_dim + torch.arange(self.head_dim, device=self.device)
        self._value_index = pairs * self.capacity + torch.arange(length, device=self.device)
        columns = torch.arange(length, device=self.device)
        self._bias = torch.zeros(len(slots), length, dtype=self.dtype, device=self.device).masked_fill(
            columns[None, :] > positions[:, None], -torch.inf
        )

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor, first_row: int = 0) -> None:
        """Store each row's new key and value (`k`, `v`: [rows, 1, kv_heads, head_dim]) at its position."""
        self.keys[layer].view(-1).index_copy_(0, self._key_slots, k[:, 0].flatten())
        self.values[layer].view(-1).index_copy_(0, self._value_slots, v[:, 0].flatten())

    def attend(self, layer: int, q: torch.Tensor, length: int, scale: float) -> torch.Tensor:
        """Attention of one query per row (`q`: [rows, heads, head_dim]) to that row's positions."""
        rows, heads, dim = q.shape
        pairs = rows * heads
        table = self.keys[layer].view(-1, self.capacity)
        scores = F.embedding_bag(self._key_index, table, per_sample_weights=q.reshape(pairs, dim), mode="sum")
        scores = scores.view(rows, heads, self.capacity)[..., : self._length]
        probs = torch.add(self._bias[:, None], scores, alpha=scale).softmax(-1)
        table = self.values[layer].view(-1, dim)
        out = F.embedding_bag(
            self._value_index, table, per_sample_weights=probs.reshape(pairs, -1), mode="sum"
        )
        return out.view(rows, 1, heads * dim)

    def _allocate(self, slots: int, capacity: int) -> None:
        """`slots` x `capacity` positions, keeping what the old allocation's common part held."""
        rows = slots * self.kv_heads
        old_keys, old_values, kept = self.keys, self.values, min(self.capacity, capacity)
        kept_rows = min(self.slots, slots) * self.kv_heads
        self.keys = [
            torch.zeros(rows, self.head_dim, capacity, dtype=self.dtype, device=self.device)
            for _ in range(self.layers)
        ]
        self.values = [
            torch.zeros(rows, capacity, self.head_dim, dtype=self.dtype, device=self.device)
            for _ in range(self.layers)
        ]
        if kept and kept_rows:
            for new, old in zip(self.keys, old_keys):
                new[:kept_rows, :, :kept] = old[:kept_rows, :, :kept]
            for new, old in zip(self.values, old_values):
                new[:kept_rows, :kept] = old[:kept_rows, :kept]
        self.slots, self.capacity = slots, capacity
