"""Judges: score a batch of (prompt, response) pairs with the gold judge or a reward model, or compare two
models' responses with an LLM judge.

A judge here is a *batch* function ``judge(prompts, responses, metas) -> list[Score]``: batching matters for
reward models (one forward pass per batch), and the gold judge does not mind. Two kinds, picked by a spec:

- ``"gold"``: the demo world's gold judge (``rlhfkit.world.judge_score``). It returns a total on 0..10 and the
  *parts* (honesty, safety, persona, ...) that the probes read. It uses the prompt record's ``meta`` when
  there is one, else recovers the task from the question text.
- ``"reward:DIR"``: a reward model folder (``AutoModelForSequenceClassification``, ``num_labels=1``) scoring
  the chat-template rendering of prompt + response, exactly as in training (``reward.model.score_conversations``).
  Its scores have no parts, so probes cannot be computed from them.
- ``"openai:URL#MODEL"``: a *pairwise* judge, any OpenAI-compatible endpoint (``rlhfkit serve`` included),
  asked which of two responses is better with the prompt template in ``judge_prompt.txt`` (or the user's
  ``--judge-prompt FILE``). It is the CAI labeler (``cai.labelers.OpenAILabeler``) asked through
  ``cai.label.ask_both_orders``: each pair of responses is shown in both orders and P(A) is read from the
  log-probs (or sampled votes), so P(x better) = (P(A | x first) + P(B | x second)) / 2 and a judge that always
  answers "(A)" gives exactly 0.5, a tie. It gives no per-response score, only these pairwise probabilities.

Totals are only compared within one judge (win rates, rankings), so the two scales need not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources
from itertools import combinations
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.world.judge import Score

BatchJudge = Callable[[Sequence[list[dict]], Sequence[str], Sequence[dict | None]], list[Score]]


def parse_judge_spec(spec: str) -> tuple[str, Path | None]:
    """("gold", None), ("reward", folder) or ("openai", None) from "gold" / "reward:DIR" / "openai:URL#MODEL"."""
    if spec == "gold":
        return "gold", None
    if spec.startswith("reward:") and spec[len("reward:") :].strip():
        return "reward", Path(spec[len("reward:") :].strip())
    if spec.startswith("openai:"):
        return "openai", None
    raise RlhfkitError(
        f"--judge: expected 'gold', 'reward:DIR' (a reward model folder) or 'openai:URL#MODEL' (an "
        f"OpenAI-compatible endpoint), got '{spec}'"
    )


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
    """The batch judge for a spec ("gold" or "reward:DIR"; "openai:..." is pairwise: `pairwise_judge`)."""
    kind, folder = parse_judge_spec(spec)
    if kind == "gold":
        return gold_judge
    if kind == "openai":
        raise RlhfkitError(f"--judge {spec}: a pairwise judge scores pairs of models, not single responses")
    assert folder is not None
    if not folder.is_dir():
        raise RlhfkitError(f"--judge: reward model folder '{folder}' not found")
    return reward_judge(folder)


# ---------------------------------------------------------------------------------------------- pairwise judge

JUDGE_PROMPT = "judge_prompt.txt"  # the packaged default template, next to this module
PLACEHOLDERS = ("conversation", "response_a", "response_b")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def load_judge_prompt(path: str | Path | None = None) -> str:
    """The judge's prompt template: `path`, or the packaged default. It must hold `{conversation}`,
    `{response_a}` and `{response_b}` and should ask for an answer of (A) or (B)."""
    if not path:
        return resources.files("rlhfkit.evaluate").joinpath(JUDGE_PROMPT).read_text(encoding="utf-8")
    p = Path(path)
    if not p.is_file():
        raise RlhfkitError(f"--judge-prompt: {p}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RlhfkitError(f"--judge-prompt: {p}: not UTF-8 text") from None
    missing = [name for name in PLACEHOLDERS if "{" + name + "}" not in text]
    if missing:
        raise RlhfkitError(
            f"--judge-prompt: {p}: the template lacks {', '.join('{' + m + '}' for m in missing)} "
            f"(it needs {{conversation}}, {{response_a}} and {{response_b}})"
        )
    return text


def fill_judge_prompt(prompt: Sequence[dict], template: str, response_a: str, response_b: str) -> str:
    """The template with the conversation (as a transcript) and the two responses put in, in one pass (a
    response that contains "{response_b}" stays as written)."""
    from rlhfkit.cai.prompts import transcript

    values = {"conversation": transcript(prompt), "response_a": response_a, "response_b": response_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class PairwiseJudge:
    """An LLM judge for pairs of responses: the CAI labeler machinery with the judge's template as question."""

    def __init__(self, labeler, template: str) -> None:
        self.labeler = labeler
        self.template = template
        self.name = getattr(labeler, "name", "judge")

    def compare(self, prompts: Sequence[list[dict]], xs: Sequence[str], ys: Sequence[str]) -> list:
        """P(x better than y) for each prompt, both orders averaged; None where the two texts are the same
        (nothing to judge: a tie, without asking)."""
        from rlhfkit.cai.label import PairQuestion, ask_both_orders

        asked = [k for k, (x, y) in enumerate(zip(xs, ys)) if x.strip() != y.strip()]
        items = [PairQuestion(prompts[k], xs[k], ys[k], [self.template]) for k in asked]
        answers = ask_both_orders(self.labeler, items, render=fill_judge_prompt) if items else []
        out: list = [None] * len(xs)
        for k, answer in zip(asked, answers):
            out[k] = answer
        return out

    def tournament(
        self,
        prompts: Sequence[list[dict]],
        texts: dict[str, Sequence[str]],
        tie_margin: float = 0.0,
        on_pair: Callable[[str, str], None] | None = None,
    ):
        """Judge every pair of models on every prompt. Returns (scores, outcomes, verdicts):

        - outcomes[i, j, k]: 1 if model i beat model j on prompt k, 0.5 a tie, 0 a loss, where with
          p = P(i better) the difference p - (1 - p) is a tie when it is within `tie_margin` (a judge with no
          preference, or whose two orders cancel, gives p = 0.5 exactly);
        - scores[name][k]: the model's mean P(better) against the others on prompt k (its "mean score");
        - verdicts[k]: {"A vs B": {"p": P(A better), "as_a": .., "as_b": .., "outcome": ..}} for responses.jsonl.
        """
        import numpy as np

        from rlhfkit.evaluate.winrates import outcome

        names = list(texts)
        n, m = len(prompts), len(names)
        outcomes = np.zeros((m, m, n))
        prob = np.full((m, m, n), 0.5)
        verdicts: list[dict] = [{} for _ in range(n)]
        for i, j in combinations(range(m), 2):
            a, b = names[i], names[j]
            for k, answer in enumerate(self.compare(prompts, texts[a], texts[b])):
                p = 0.5 if answer is None else answer.p_x
                outcomes[i, j, k] = outcome(p, 1.0 - p, tie_margin)
                outcomes[j, i, k] = 1.0 - outcomes[i, j, k]
                prob[i, j, k], prob[j, i, k] = p, 1.0 - p
                verdict = {"p": round(p, 6), "outcome": float(outcomes[i, j, k])}
                if answer is None:
                    verdict["identical"] = True
                else:
                    verdict.update(as_a=round(answer.first[0], 6), as_b=round(1.0 - answer.second[0], 6))
                    verdict["method"] = answer.choices[0].method
                verdicts[k][f"{a} vs {b}"] = verdict
            if on_pair:
                on_pair(a, b)
        off = ~np.eye(m, dtype=bool)
        scores = {name: [float(prob[i, off[i], k].mean()) for k in range(n)] for i, name in enumerate(names)}
        return scores, outcomes, verdicts


def pairwise_judge(
    spec: str, prompt_file: str | Path | None = None, seed: int = 0, client=None
) -> PairwiseJudge:
    """The pairwise judge for `openai:URL#MODEL` with the template in `prompt_file` (default: packaged)."""
    from rlhfkit.cai.labelers import OpenAILabeler, parse_openai_spec

    url, model = parse_openai_spec(spec, flag="--judge")
    template = load_judge_prompt(prompt_file)
    return PairwiseJudge(OpenAILabeler(url, model, seed=seed, client=client), template)
