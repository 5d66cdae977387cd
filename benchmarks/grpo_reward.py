"""The reward of `benchmarks/grpo.py`: a deterministic python function both sides compute the same way.

A benchmark of two trainers needs a reward that (a) costs next to nothing, so it does not hide the trainers'
own speed, (b) a random tiny policy can learn in a few steps, so the reward curves show learning, and (c) is
computed identically from what both sides hand their reward functions. A reward model folder fails (b)
(a random RM scores noise), and text-based rewards fail (c): rlhfkit and TRL decode special tokens
differently. So the reward reads token ids: the share of a response's ordinary tokens whose text contains
the letter "e" (the end-of-turn token and other special tokens are left out of both counts). It needs only
the tokenizer both sides load from the same folder, and it imports neither rlhfkit nor TRL.
"""

from __future__ import annotations

LETTER = "e"


class LetterShare:
    """reward(ids) = share of the non-special tokens in `ids` whose decoded text contains LETTER (0 if none)."""

    def __init__(self, tokenizer) -> None:
        self.special = frozenset(tokenizer.all_special_ids)
        self.targets = frozenset(
            i for i in range(len(tokenizer)) if i not in self.special and LETTER in tokenizer.decode([i])
        )

    def __call__(self, ids: list[int]) -> float:
        ordinary = [i for i in ids if i not in self.special]
        return sum(i in self.targets for i in ordinary) / len(ordinary) if ordinary else 0.0
