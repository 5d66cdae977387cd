"""The lean decoder over a slot pool: prefill newcomers into free slots, decode any set of slots per step.

Continuous batching (`rlhfkit.serve.continuous`) needs rows that join a running batch. Newcomers that
arrive together are prefilled together, by the lean decoder's own `prefill` (one left-padded batch per group
of similar lengths; a lone newcomer is a batch of one without padding: exactly what `generation.generate`
computes for that prompt), and each one's cache is copied into a free slot of the pool
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
        return self.prefill_many([prompt_ids])[0]

    def prefill_many(self, prompts: list[list[int]]) -> list[tuple[int, torch.Tensor]]:
        """Prefill newcomers into free slots, those of similar lengths together: for each prompt, (its slot,
        fp32 logits `[1, vocab]` of its last position).

        Why together: a prompt of ~30 tokens alone is a 30-row matmul per weight; sixteen of them in one
        left-padded batch (which the lean prefill runs in slices of ~256 tokens) read each weight a few
        times instead of sixteen. Prompts are grouped by length so that padding adds at most about a
        quarter to a group's tokens. A lone prompt runs unpadded, exactly what `generate` computes for it."""
        if len(prompts) > self.free:
            raise ValueError(f"{len(prompts)} prompts for {self.free} free slots")
        results: list[tuple[int, torch.Tensor] | None] = [None] * len(prompts)
        for group in _length_groups(prompts):
            width = max(len(prompts[i]) for i in group)
            ids = torch.zeros(len(group), width, dtype=torch.long)
            mask = torch.zeros(len(group), width, dtype=torch.long)
            for r, i in enumerate(group):  # left padding: every row's last token in the last column
                ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[r, width - len(prompts[i]) :] = 1
            device = self.lean.device
            logits = self.lean.prefill(ids.to(device), mask.to(device), 1)
            for r, i in enumerate(group):
                slot = self._live.index(False)
                length = len(prompts[i])
                self.cache.load(slot, self.lean.cache, length, row=r, start=width - length)
                self.positions[slot] = length
                self._live[slot] = True
                results[i] = (slot, logits[r : r + 1])
            self.lean.cache = None  # the prefill's own cache is copied: let it go
        return results

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


_MAX_PADDING = 0.25  # padding may add this share to a group's real tokens


def _length_groups(prompts: list[list[int]]) -> list[list[int]]:
    """Indices of `prompts` in groups of similar length (shortest first): a group's padded size, its count
    times its longest length, stays within (1 + _MAX_PADDING) times its real tokens."""
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):
        n = len(prompts[i])
        if groups and (len(groups[-1]) + 1) * n <= (1 + _MAX_PADDING) * (real + n):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups
