"""Comparison groups as token rows: one (ids, labels) row per completion, labels only on the response.

A row is the chat `prompt + completion` rendered with the tokenizer's chat template (`tokenize_chat`, the SFT
tokenization), so the policy is trained on exactly the text it generates from. Labels are IGNORE everywhere
except the completion's own tokens (its content and end-of-turn token): summing their log-probs gives the
sequence log-prob log pi(y|x) that DPO compares. Earlier assistant turns inside a multi-turn prompt are
masked too; being identical in every completion of a group they would cancel in h anyway, but they would blur
the per-response implicit rewards we log.

An overlong multi-turn prompt first loses its oldest exchanges (a user turn and the reply to it; a system
message stays), the same ones for every completion of the group, until its longest row fits or only the last
user turn is left: real comparison data (HH-RLHF) is mostly multi-turn, and cutting from the right would
throw away the responses being compared, the only tokens DPO learns from. Rows still too long are cut from
the right like SFT's (a long response loses its tail). A completion with no token left within `max_length`
cannot be scored; the pairs that involve it are dropped (and counted), and a group without pairs is dropped
whole.

One batch element is one comparison group, as in the reward stage: each completion's row appears once, the
group's loss is the mean over its pairs (C(K, 2) for a ranking of K), and the loop's `count` is the number of
groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.data.comparisons import ComparisonGroup, JudgedPair
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.text import render_chat
from rlhfkit.train.chat_tokens import IGNORE, chat_ids, tokenize_chat
from rlhfkit.train.sft import collate

Row = tuple[list[int], list[int]]


@dataclass
class TokenGroup:
    """A comparison group's usable completions as token rows, and its pairs as indices into `rows`."""

    rows: list[Row]
    pairs: list[JudgedPair]


def encode_completion(
    tokenizer, prompt: list[dict], completion: list[dict], max_length: int, where: str
) -> Row:
    """(ids, labels) of prompt + completion, with labels on the completion's tokens only."""
    ids, labels = tokenize_chat(tokenizer, prompt + completion, max_length, where)
    prompt_len = len(tokenizer(render_chat(tokenizer, prompt), add_special_tokens=False)["input_ids"])
    labels = [IGNORE] * min(prompt_len, len(labels)) + labels[prompt_len:]
    return ids, labels


def fitting_prompt(
    tokenizer, prompt: list[dict], completions: list[list[dict]], max_length: int
) -> list[dict]:
    """`prompt` without its oldest exchanges, as few as needed for the longest completion's row to fit."""
    head = [m for m in prompt[:1] if m["role"] == "system"]
    turns = prompt[len(head) :]

    def longest(p: list[dict]) -> int:
        return max(len(chat_ids(tokenizer, p + c)) for c in completions)

    # The next user turn after the first one: dropping up to it removes one whole exchange.
    while longest(head + turns) > max_length:
        later = [i for i, m in enumerate(turns) if m["role"] == "user" and i > 0]
        if not later:
            break
        turns = turns[later[0] :]
    return head + turns


def encode_groups(
    tokenizer, groups: list[ComparisonGroup], max_length: int, source: str, log=print
) -> list[TokenGroup]:
    """Tokenize every completion once; drop pairs whose completion lost all its tokens to `max_length`."""
    if tokenizer.chat_template is None:
        raise RlhfkitError(
            f"{source}: the policy's tokenizer has no chat template; DPO needs one to render chats"
        )
    out: list[TokenGroup] = []
    dropped_pairs = 0
    for n, g in enumerate(groups):
        where = f"{source}:{g.line if g.line is not None else n + 1}"
        prompt = fitting_prompt(tokenizer, g.prompt, g.completions, max_length)
        rows = [encode_completion(tokenizer, prompt, c, max_length, where) for c in g.completions]
        usable = [any(lab != IGNORE for lab in labels[1:]) for _, labels in rows]
        keep = {i: len([j for j in range(i) if usable[j]]) for i in range(len(rows)) if usable[i]}
        pairs = [
            JudgedPair(keep[p.better], keep[p.worse], p.target, p.margin)
            for p in g.pairs
            if p.better in keep and p.worse in keep
        ]
        dropped_pairs += len(g.pairs) - len(pairs)
        if pairs:
            out.append(TokenGroup([r for r, ok in zip(rows, usable) if ok], pairs))
    if dropped_pairs:
        log(
            f"dpo: {dropped_pairs} pair(s) in {source} have a completion with no tokens within "
            f"--max-length {max_length}; skipped"
        )
    if not out:
        raise RlhfkitError(
            f"{source}: no usable pairs (every completion was cut off by --max-length {max_length})"
        )
    return out


def pair_index(groups: list[TokenGroup], idx: list[int]) -> dict[str, torch.Tensor]:
    """The pairs of groups `idx` as flat tensors: group position in `idx`, better/worse completion, target, weight.

    `weight` is 1 / (pairs in the group), so summing weighted pair losses gives one mean loss per group.
    """
    g, better, worse, target, weight = [], [], [], [], []
    for pos, gi in enumerate(idx):
        pairs = groups[gi].pairs
        for p in pairs:
            g.append(pos)
            better.append(p.better)
            worse.append(p.worse)
            target.append(p.target)
            weight.append(1.0 / len(pairs))
    return {
        "group": torch.tensor(g),
        "better": torch.tensor(better),
        "worse": torch.tensor(worse),
        "target": torch.tensor(target, dtype=torch.float32),
        "weight": torch.tensor(weight, dtype=torch.float32),
    }


def collate_groups(groups: list[TokenGroup], idx: list[int], ref: torch.Tensor, pad_id: int, device) -> dict:
    """A micro-batch: every completion row of groups `idx` once, its reference log-prob, and the pairs as rows.

    `ref` is the precomputed reference table [groups, max completions]; `better`/`worse` index the rows.
    """
    rows, offsets, ref_rows, row_groups = [], [], [], []
    for gi in idx:
        offsets.append(len(rows))
        rows.extend(groups[gi].rows)
        row_groups.extend([gi] * len(groups[gi].rows))
        ref_rows.append(ref[gi, : len(groups[gi].rows)])
    batch = collate(rows, pad_id, device)  # shifted inputs/labels, right padding, attention mask
    pairs = pair_index(groups, idx)
    start = torch.tensor(offsets)[pairs["group"]]
    batch.update(
        better=(start + pairs["better"]).to(device),
        worse=(start + pairs["worse"]).to(device),
        target=pairs["target"].to(device),
        weight=pairs["weight"].to(device),
        ref_logps=torch.cat(ref_rows).to(device),
        row_groups=row_groups,  # a group's rows share their prompt (`train.shared_prefix`)
        count=len(idx),
    )
    return batch
