"""The slot pool behind continuous batching: per-row attention equals SDPA, and rows that join a running
batch at different steps, in reused slots, decode exactly what the engine decodes for each prompt alone."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.generation import SamplingParams, generate
from rlhfkit.generation.slot_cache import _CAPACITY_STEP, SlotKVCache
from rlhfkit.generation.slot_decoder import SlotDecoder, _length_groups
from test_generation import PAD, llama, prompts
from test_generation_kv_cache import sdpa_reference


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_rows_at_their_own_positions_attend_like_sdpa(kv_heads):
    gen = torch.Generator().manual_seed(0)
    slots, heads, dim, layers = 4, 4, 8, 2
    total = _CAPACITY_STEP + 20
    cache = SlotKVCache(layers, slots, kv_heads, heads, dim, torch.float32, torch.device("cpu"))
    keys = torch.randn(layers, slots, total, kv_heads, dim, generator=gen)
    values = torch.randn(layers, slots, total, kv_heads, dim, generator=gen)
    every = torch.arange(slots)
    for p in range(total):  # a previous occupant of every slot left stale keys and values everywhere
        cache.begin_step(every, torch.full((slots,), p))
        for layer in range(layers):
            stale = torch.randn(slots, 1, kv_heads, dim, generator=gen)
            cache.write(layer, 0, stale, stale)
    length = torch.tensor([0, 7, 3, 0])  # slots 1 and 2 hold prompts of 7 and 3 tokens; 0 and 3 start empty
    for p in range(7):
        rows = torch.tensor([s for s in (1, 2) if p < length[s]])
        cache.begin_step(rows, torch.full((len(rows),), p))
        for layer in range(layers):
            cache.write(layer, 0, keys[layer, rows, p][:, None], values[layer, rows, p][:, None])
    for t in range(total - 10):
        rows = torch.tensor([s for s in range(slots) if s != 3 or t >= 5])  # slot 3 joins at step 5
        positions = length[rows]
        cache.begin_step(rows, positions)
        for layer in range(layers):
            k = keys[layer, rows, positions][:, None]
            v = values[layer, rows, positions][:, None]
            cache.write(layer, 0, k, v)
            q = torch.randn(len(rows), heads, dim, generator=gen)
            got = cache.attend(layer, q, 0, dim**-0.5)[:, 0]
            for r, slot in enumerate(rows.tolist()):
                n = int(positions[r]) + 1
                k_ref = keys[layer, slot, :n].transpose(0, 1)[None]
                v_ref = values[layer, slot, :n].transpose(0, 1)[None]
                valid = torch.ones(1, n, dtype=torch.bool)
                expected = sdpa_reference(k_ref, v_ref, q[r : r + 1], valid, dim**-0.5)
                torch.testing.assert_close(got[r : r + 1], expected, rtol=1e-5, atol=1e-5)
        length[rows] += 1
    assert cache.capacity == 2 * _CAPACITY_STEP
    cache.reset()
    assert cache.capacity == 0 and cache.keys[0].numel() == 0


@pytest.mark.parametrize(
    ("dtype", "quantize"), [(torch.float32, "none"), (torch.bfloat16, "none"), (torch.float32, "int8")]
)
def test_rows_joining_a_running_batch_decode_what_they_decode_alone(dtype, quantize):
    """Greedy, 6 prompts through 3 slots: a newcomer joins every few steps, finished rows free their slot
    for the next one, the pool grows past one capacity step, and every row equals `generate` alone: in fp32,
    with bf16 weights (`serve --dtype bfloat16`) and with int8 ones (`serve --quantize int8`)."""
    model = llama(kv_heads=2).to(dtype)
    prompt_ids = prompts()
    limits = [140, 30, 60, 5, 90, 12]
    expected = [
        generate(
            model, [p], SamplingParams(max_new_tokens=n, temperature=0), pad_token_id=PAD, quantize=quantize
        )[0].token_ids
        for p, n in zip(prompt_ids, limits)
    ]
    decoder = SlotDecoder(model, 3, quantize=quantize)
    out: dict[int, list[int]] = {}
    live: dict[int, int] = {}  # slot -> prompt
    waiting = list(range(len(prompt_ids)))
    step = 0
    joined_running = 0
    with torch.inference_mode():
        while waiting or live:
            if waiting and decoder.free and step % 3 == 0:
                i = waiting.pop(0)
                joined_running += bool(live)
                slot, logits = decoder.prefill(prompt_ids[i])
                out[i] = [int(logits.argmax(-1))]
                live[slot] = i
            slots = list(live)
            logits = decoder.step(slots, torch.tensor([out[live[s]][-1] for s in slots]))
            for r, slot in enumerate(slots):
                i = live[slot]
                out[i].append(int(logits[r].argmax()))
                if len(out[i]) == limits[i]:
                    decoder.release(slot)
                    del live[slot]
            step += 1
    assert joined_running >= 4  # most rows joined a batch already decoding
    assert [out[i] for i in range(len(prompt_ids))] == expected
    assert decoder.free == 3 and decoder.cache.capacity == 0  # an idle pool holds no cache


def test_newcomers_prefilled_together_decode_what_they_decode_alone():
    """Prompts of lengths 1-12 arriving together, some while others decode, are prefilled in left-padded
    groups of similar lengths; each row's greedy tokens equal `generate`'s for its prompt alone."""
    model = llama(kv_heads=2)
    prompt_ids = prompts((5, 9, 3, 12, 7, 1, 11, 10))
    new_tokens = 40
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)
    expected = [generate(model, [p], params, pad_token_id=PAD)[0].token_ids for p in prompt_ids]
    decoder = SlotDecoder(model, 8)
    out: dict[int, list[int]] = {}
    live: dict[int, int] = {}  # slot -> prompt
    with torch.inference_mode():
        for arrivals in ([0, 1, 2, 3, 4], [5, 6, 7]):  # the second wave joins a running batch
            filled = decoder.prefill_many([prompt_ids[i] for i in arrivals])
            assert len({slot for slot, _ in filled}) == len(arrivals)
            for i, (slot, logits) in zip(arrivals, filled):
                out[i] = [int(logits.argmax(-1))]
                live[slot] = i
            for _ in range(3):
                slots = [s for s in live if len(out[live[s]]) < new_tokens]
                logits = decoder.step(slots, torch.tensor([out[live[s]][-1] for s in slots]))
                for r, slot in enumerate(slots):
                    out[live[slot]].append(int(logits[r].argmax()))
        while any(len(out[i]) < new_tokens for i in live.values()):
            slots = [s for s in live if len(out[live[s]]) < new_tokens]
            logits = decoder.step(slots, torch.tensor([out[live[s]][-1] for s in slots]))
            for r, slot in enumerate(slots):
                out[live[slot]].append(int(logits[r].argmax()))
    assert [out[i] for i in range(len(prompt_ids))] == expected
    assert decoder.free == 0


def test_prompts_are_grouped_by_length_with_little_padding():
    lengths = [30, 2, 31, 29, 3, 120, 33]
    groups = _length_groups([[1] * n for n in lengths])
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in group) for group in groups] == [[2, 3], [29, 30, 31, 33], [120]]
    for group in groups:
        real = sum(lengths[i] for i in group)
        assert len(group) * max(lengths[i] for i in group) <= 1.25 * real
