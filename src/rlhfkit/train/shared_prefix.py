"""Rows that share a prefix, computed once: a DPO group's answers to one prompt packed into one sequence.

Why: DPO scores every completion of a comparison with its whole conversation in front of it, so the chosen
and the rejected row repeat the same prompt tokens. On the SmolLM2 recipe's HH-RLHF data (578 pairs, 192
tokens at most) the rows' common prefixes are 32% of all their tokens: a third of the forward, the backward
and the reference pass spent twice on the same numbers. Here each run of rows of one group becomes one
sequence, `prefix + suffix_1 + suffix_2 + ...`, in which a suffix token attends to the prefix and to its own
suffix only (`lean_forward`'s branch mask) and takes the RoPE position it has in its own row. Every hidden
state is then the one its own row would give; the prefix's states (and their gradients, summed over the
suffixes that read them) are computed once, and each row's label tokens pick their states from the
packed sequence, the last prefix state once per row with that row's own next token.

Only for the lean training forward (`train.lean_forward`: Llama-layout bodies) under a plain LM head
(`train.logits.plain_lm_head`); `shared_prefix_logprobs` returns None anywhere else and the caller keeps
one row per completion. Tests: tests/test_shared_prefix.py (log-probs and gradients equal the per-row ones).
"""

from __future__ import annotations

import torch

from rlhfkit.train.chat_tokens import IGNORE
from rlhfkit.train.head_loss import linear_token_logprobs
from rlhfkit.train.lean_forward import lean_hidden_at, lean_supported
from rlhfkit.train.logits import causal_lm_of, plain_lm_head

_MIN_SHARED = 8  # shorter common prefixes are not worth a packed row's longer attention


def shared_prefix_logprobs(
    model: torch.nn.Module, batch: dict, row_groups: list[int], temperature: float = 1.0
) -> torch.Tensor | None:
    """[rows] summed log-probs of each row's label tokens (a `train.sft.collate` batch: shifted, right-padded),
    with consecutive rows of the same `row_groups` id packed over their common prefix, the logits divided by
    `temperature`; None where the lean path does not apply."""
    if not plain_lm_head(model):
        return None
    lm = causal_lm_of(model)
    if temperature != 1.0 and lm.lm_head.bias is not None:  # below, the states are divided instead
        return None
    if not lean_supported(lm.model):
        return None
    ids, labels = batch["input_ids"], batch["labels"]
    lengths = batch["attention_mask"].sum(1).tolist()
    packed = _pack(ids.tolist(), labels.tolist(), lengths, row_groups)
    if packed is None:
        return None
    seqs, positions, branches, picks = packed
    width = max(len(s) for s in seqs)
    device = ids.device
    x = torch.zeros(len(seqs), width, dtype=torch.long)
    pos = torch.zeros(len(seqs), width, dtype=torch.long)
    branch = torch.full((len(seqs), width), -1, dtype=torch.long)  # pads: a branch of their own
    for n, (s, p, b) in enumerate(zip(seqs, positions, branches, strict=True)):
        x[n, : len(s)], pos[n, : len(s)], branch[n, : len(s)] = (
            torch.tensor(s),
            torch.tensor(p),
            torch.tensor(b),
        )
    where = torch.tensor(picks, dtype=torch.long)  # [tokens, 4]: packed row, packed column, label, source row
    select = torch.zeros(len(seqs), width, dtype=torch.bool)
    select[where[:, 0], where[:, 1]] = True
    order = torch.full((len(seqs), width), -1, dtype=torch.long)
    order[select] = torch.arange(int(select.sum()))  # a selected position's row in the hidden states
    x, pos, branch, select = x.to(device), pos.to(device), branch.to(device), select.to(device)
    hidden = lean_hidden_at(lm.model, x, select, (pos, branch))
    states = hidden[order[where[:, 0], where[:, 1]].to(device)]  # the last prefix state once per row
    if temperature != 1.0:
        states = states / temperature  # (h / T) W^T = (h W^T) / T for a bias-free head
    logps = linear_token_logprobs(states, lm.lm_head, where[:, 2].to(device))
    out = torch.zeros(ids.size(0), dtype=logps.dtype, device=device)
    return out.index_add(0, where[:, 3].to(device), logps)


def _pack(ids: list[list[int]], labels: list[list[int]], lengths: list[int], row_groups: list[int]):
    """(sequences, RoPE positions, branch ids, [(sequence, column, label, row)] per label token), or None when
    no two rows share enough of a prefix to pack."""
    seqs, positions, branches, picks = [], [], [], []
    shared_any = False
    start = 0
    while start < len(ids):
        end = start + 1
        while end < len(ids) and row_groups[end] == row_groups[start]:
            end += 1
        run = range(start, end)
        first = ids[start][: lengths[start]]
        prefix = min((_common(first, ids[r][: lengths[r]]) for r in run[1:]), default=0)
        if len(run) == 1 or prefix < _MIN_SHARED:
            runs = [[r] for r in run]  # each row alone: its whole row is its "prefix"
        else:
            runs = [list(run)]
            shared_any = True
        for rows in runs:
            head = prefix if len(rows) > 1 else lengths[rows[0]]
            seq, pos, branch = list(ids[rows[0]][:head]), list(range(head)), [0] * head
            for k, r in enumerate(rows):
                offset = len(seq) - head  # column of this row's position `head` in the packed sequence
                seq += ids[r][head : lengths[r]]
                pos += range(head, lengths[r])
                branch += [k + 1] * (lengths[r] - head)
                for t in range(lengths[r]):
                    if labels[r][t] != IGNORE:
                        picks.append((len(seqs), t if t < head else offset + t, labels[r][t], r))
            seqs.append(seq)
            positions.append(pos)
            branches.append(branch)
        start = end
    return (seqs, positions, branches, picks) if shared_any and picks else None


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
