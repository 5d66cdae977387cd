"""DPO rows of one comparison packed over their shared prompt (`train.shared_prefix`) give the per-row
log-probs and gradients: plain and LoRA Llama models, both attention paths, and rows whose labels start
inside the shared prefix."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.train import lean_forward
from rlhfkit.train.chat_tokens import IGNORE
from rlhfkit.train.logits import label_logprobs
from rlhfkit.train.sft import collate
from rlhfkit.train.shared_prefix import _pack, shared_prefix_logprobs
from test_lora_path import llama, lora


def rows():
    """Three comparisons: two answers sharing a 10-token prompt (and their first answer token), three
    answers to one prompt, and a single row; labels on the answers only."""
    gen = torch.Generator().manual_seed(3)

    def tokens(n):
        return torch.randint(2, 97, (n,), generator=gen).tolist()

    def row(prompt, answer):
        ids = prompt + answer
        return ids, [IGNORE] * len(prompt) + answer

    p1, p2, p3, first = tokens(10), tokens(12), tokens(6), tokens(1)
    out = [row(p1, first + tokens(5)), row(p1, first + tokens(3))]
    out += [row(p2, tokens(4)), row(p2, tokens(6)), row(p2, tokens(2))]
    out += [row(p3, tokens(7))]
    return out, [0, 0, 1, 1, 1, 2]


def per_row_and_shared(model):
    examples, groups = rows()
    batch = collate(examples, 0, "cpu")
    results = []
    for shared in (False, True):
        model.zero_grad(set_to_none=True)
        if shared:
            logps = shared_prefix_logprobs(model, batch, groups)
        else:
            mask = batch["labels"] != IGNORE
            flat = label_logprobs(model, batch["input_ids"], mask, batch["labels"][mask])
            logps = torch.zeros(len(examples)).index_add(0, mask.nonzero()[:, 0], flat)
        (logps * torch.arange(1.0, len(examples) + 1)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logps.detach(), grads))
    return results


@pytest.mark.parametrize("attention", ["matmul", "sdpa"])
@pytest.mark.parametrize("adapters", [False, True], ids=["full", "lora"])
def test_shared_prefix_logprobs_and_gradients_equal_one_row_per_answer(attention, adapters, monkeypatch):
    if attention == "sdpa":
        monkeypatch.setattr(lean_forward, "_MATMUL_ATTENTION_MAX", 0)
    model = lora(llama()) if adapters else llama()
    (want, want_grads), (got, got_grads) = per_row_and_shared(model)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want_grads and want_grads.keys() == got_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_packing_shares_the_prefix_and_places_each_answer_after_it():
    examples, groups = rows()
    batch = collate(examples, 0, "cpu")
    lengths = batch["attention_mask"].sum(1).tolist()
    seqs, positions, branches, picks = _pack(
        batch["input_ids"].tolist(), batch["labels"].tolist(), lengths, groups
    )
    assert len(seqs) == 3  # one sequence per comparison
    # the first pair shares its prompt and first answer token: 11 tokens once, then each answer's rest
    assert len(seqs[0]) == 11 + (lengths[0] - 11) + (lengths[1] - 11)
    assert positions[0][11:] == list(range(11, lengths[0])) + list(range(11, lengths[1]))
    assert set(branches[0][:11]) == {0} and set(branches[0][11:]) == {1, 2}
    # the last prefix position is read once per row, each time with that row's own next token
    at_junction = [(label, row) for seq, col, label, row in picks if seq == 0 and col == 10]
    assert sorted(r for _, r in at_junction) == [0, 1] and at_junction[0][0] != at_junction[1][0]
    assert len(picks) == int((batch["labels"] != IGNORE).sum())


def test_rows_without_a_common_prompt_are_not_packed():
    examples, _ = rows()
    batch = collate(examples, 0, "cpu")
    assert shared_prefix_logprobs(llama(), batch, list(range(len(examples)))) is None
