"""Judges: score a batch of (prompt, response) pairs with the gold judge or with a reward model.

A judge here is a *batch* function ``judge(prompts, responses, metas) -> list[Score]``: batching matters for
reward models (one forward pass per batch), and the gold judge does not mind. Two kinds, picked by a spec:

- ``"gold"``: the demo world's gold judge (``rlhfkit.world.judge_score``). It returns a total on 0..10 and the
  *parts* (honesty, safety, persona, ...) that the probes read. It uses the prompt record's ``meta`` when
  there is one, else recovers the task from the question text.
- ``"reward:DIR"``: a reward model folder (``AutoModelForSequenceClassification``, ``num_labels=1``) scoring
  the chat-template rendering of prompt + response, exactly as in training (``reward.model.score_conversations``).
  Its scores have no parts, so probes cannot be computed from them.

Totals are only compared within one judge (win rates, rankings), so the two scales need not match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.world.judge import Score

BatchJudge = Callable[[Sequence[list[dict]], Sequence[str], Sequence[dict | None]], list[Score]]


def parse_judge_spec(spec: str) -> tuple[str, Path | None]:
    """("gold", None) or ("reward", folder) from "gold" / "reward:DIR"."""
    if spec == "gold":
        return "gold", None
    if spec.startswith("reward:") and spec[len("reward:") :].strip():
        return "reward", Path(spec[len("reward:") :].strip())
    raise RlhfkitError(f"--judge: expected 'gold' or 'reward:DIR' (a reward model folder), got '{spec}'")


def gold_judge(
    prompts: Sequence[list[dict]], responses: Sequence[str], metas: Sequence[dict | None]
) -> list[Score]:
    """The demo world's gold judge, one response at a time (it scores thousands per second)."""
    from rlhfkit.world import judge_score

    return [judge_score(list(p), r, m or None) for p, r, m in zip(prompts, responses, metas)]


def reward_judge(folder: str | Path, max_length: int | None = None, batch_size: int = 16) -> BatchJudge:
    """A judge that scores with the reward model in `folder` (loaded once, on CPU or the first GPU)."""
    import torch

    from rlhfkit.reward.model import load_scorer, score_conversations

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, length = load_scorer(folder, device, max_length)

    def judge(
        prompts: Sequence[list[dict]], responses: Sequence[str], metas: Sequence[dict | None]
    ) -> list[Score]:
        items = [(list(p), [{"role": "assistant", "content": r}]) for p, r in zip(prompts, responses)]
        scores = score_conversations(model, tokenizer, items, length, batch_size)
        return [Score(round(float(s), 4), {}) for s in scores]

    return judge


def make_judge(spec: str) -> BatchJudge:
    """The batch judge for a spec ("gold" or "reward:DIR")."""
    kind, folder = parse_judge_spec(spec)
    if kind == "gold":
        return gold_judge
    assert folder is not None
    if not folder.is_dir():
        raise RlhfkitError(f"--judge: reward model folder '{folder}' not found")
    return reward_judge(folder)
