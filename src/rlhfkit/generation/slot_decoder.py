"""The lean decoder over a slot pool: prefill one newcomer into a free slot, decode any set of slots per step.

Continuous batching (`rlhfkit.serve.continuous`) needs rows that join a running batch. A newcomer is
prefilled alone, by the lean decoder's own `prefill` (a batch of one, no padding: exactly what
`generation.generate` computes for that prompt), and its cache is copied into a free slot of the pool
(`slot_cache.SlotKVCache`). Each decode step then runs every live slot together, each at its own position.
The weights are the lean decoder's packed ones, shared with every other lean call on the same model.
"""

from __future__ import annotations

import torch

from rlhfkit.generation.lean_llama import LeanLlama, rope_tables
from rlhfkit.generation.slot_cache import SlotKVCache, _round_up

_ROPE_STEP = 1024  # RoPE tables grow in steps of this many positions


class SlotDecoder:
    """Up to `slots` sequences decoded together; rows join with `prefill` and leave with `release`.
    `batch_hint` (the usual number of rows per step) only tunes the oneDNN weight layout; `quantize` is
    `LeanLlama`'s."""

    def __init__(self, model: torch.nn.Module, slots: int, batch_hint: int = 32, quantize: str = "none"):
        self.lean = LeanLlama(model, batch_hint, quantize)
        self.slots = slots
        self.cache = SlotKVCache(
            len(self.lean.layers),
            slots,
            self.lean.num_kv_heads,
            self.lean.num_heads,
            self.lean.head_dim,
            self.lean.dtype,
            self.lean.device,
        )
        self.positions = torch.zeros(slots, dtype=torch.long)  # the position each slot writes next
        self._live = [False] * slots
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def free(self) -> int:
        return self._live.count(False)

    def prefill(self, prompt_ids: list[int]) -> tuple[int, torch.Tensor]:
        """Prefill a prompt into a free slot: (the slot, fp32 logits `[1, vocab]` of its last position)."""
        slot = self._live.index(False)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.lean.device)
        logits = self.lean.prefill(ids, torch.ones_like(ids), 1)
        self.cache.load(slot, self.lean.cache, len(prompt_ids))
        self.lean.cache = None  # the batch-of-one cache is copied: let it go
        self.positions[slot] = len(prompt_ids)
        self._live[slot] = True
        return slot, logits

    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Feed `tokens[r]` to slot `slots[r]`; fp32 next-token logits `[len(slots), vocab]`."""
        index = torch.tensor(slots, dtype=torch.long)
        positions = self.positions[index]
        self.cache.begin_step(index.to(self.lean.device), positions.to(self.lean.device))
        logits = self.lean.step_rows(
            tokens, positions.to(self.lean.device), self.cache, self._rope_for(int(positions.max()) + 1)
        )
        self.positions[index] += 1
        return logits

    def release(self, slot: int) -> None:
        """Free a slot for the next newcomer; the pool's memory goes when the last slot is freed."""
        self._live[slot] = False
        if not any(self._live):
            self.cache.reset()

    def _rope_for(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Non-dynamic RoPE (what the lean path runs) gives the same values for a prefix whatever the length.
        if self._rope is None or self._rope[0].shape[0] < length:
            positions = torch.arange(_round_up(length, _ROPE_STEP), device=self.lean.device)
            self._rope = rope_tables(self.lean.model.model.rotary_emb, positions, self.lean.embed)
        return self._rope
