"""Best-of-n: sample n answers, keep the one the reward model scores highest.

The simplest use of a reward model, and a strong one: no training, and its KL to the sampler is at most
log n - (n - 1) / n (`kl_bound`). It is what WebGPT served (best of 64) and what rejection sampling distils
into a policy; an RL method must beat it at the same KL. `rlhfkit generate --best-of`, `evaluate --best-of`
(a model that answers as best-of-n, judged like any other) and `serve --best-of` all pick through here.

A sample cut off at the length limit never wins over one that finished (the reward model scores what it
reads, and a cut-off answer is not an answer); a group with no finished sample keeps its best cut-off one.
"""

from __future__ import annotations

import math


def kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || sampler) in nats, per prompt (Stiennon et al. 2020, appendix G.3)."""
    return math.log(n) - (n - 1) / n


def ranked(scores: list[float], finished: list[bool]) -> list[int]:
    """Indices best first: every finished sample before every cut-off one, each by score (a tie keeps the
    earlier sample first)."""
    return sorted(range(len(scores)), key=lambda i: (not finished[i], -scores[i]))


def best_in_groups(scores: list[float], finished: list[bool], n: int) -> list[int]:
    """Index of the winner of each consecutive group of `n`: the highest score among the group's finished
    samples, or among all of them when none finished."""
    if n < 1 or len(scores) % n or len(finished) != len(scores):
        raise ValueError(f"best_in_groups: {len(scores)} scores do not split into groups of {n}")
    return [
        start + ranked(scores[start : start + n], finished[start : start + n])[0]
        for start in range(0, len(scores), n)
    ]


def parse_counts(
    specs: list[str] | None, names, reranker: str | None, *, most: int, role: str = "named"
) -> dict[str, int]:
    """{model name: n} from `--best-of NAME=N` values: each NAME one of `names` (`role` says how a name is
    given, for the message), each N from 2 to `most`, and a `reranker` to pick with."""
    from rlhfkit.errors import RlhfkitError

    counts: dict[str, int] = {}
    for spec in specs or []:
        name, _, n = spec.partition("=")
        if name not in names:
            raise RlhfkitError(
                f"--best-of {spec}: no --model is {role} '{name}' (models: {', '.join(names)})"
            )
        if not n.isdigit() or not 2 <= int(n) <= most:
            raise RlhfkitError(f"--best-of {spec}: expected NAME=N with N from 2 to {most}")
        counts[name] = int(n)
    if counts and not reranker:
        raise RlhfkitError("--best-of needs --reranker DIR (the reward model that picks the best answer)")
    return counts


def load_reranker(reward_dir: str, device="cpu"):
    """(model, tokenizer, max_length) of the reward model that picks; refuses an evaluation-only judge
    folder, since best-of-n optimizes against its scores."""
    from rlhfkit.reward.model import load_scorer

    return load_scorer(reward_dir, device, optimize=True)


def pick_best_of(
    completions: list, prompts: list[list[dict]], best_of: int, reranker, bf16: bool = False
) -> tuple[list, list[float]]:
    """Keep the reward model's favourite of each group of `best_of` completions.

    `completions` are prompt-major (each prompt's samples in a row, `best_of` per kept answer) and carry `text`
    and `finish_reason`; `prompts` are the chats they answer, one per prompt. `reranker` is a reward-model
    folder or what `load_reranker` returned. Returns the kept completions, in order, and their scores."""
    from rlhfkit.reward.model import score_conversations

    rm, rm_tok, max_length = load_reranker(reranker) if isinstance(reranker, str) else reranker
    per_prompt = len(completions) // len(prompts)
    items = [
        (prompts[i // per_prompt], [{"role": "assistant", "content": c.text}])
        for i, c in enumerate(completions)
    ]
    scores = score_conversations(rm, rm_tok, items, max_length, batch_size=32, bf16=bf16)
    finished = [c.finish_reason == "stop" for c in completions]
    winners = best_in_groups(scores, finished, best_of)
    return [completions[i] for i in winners], [scores[i] for i in winners]
