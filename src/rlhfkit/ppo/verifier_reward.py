"""`--reward verifier`: the task's checker as the reward (RLVR), instead of a reward model.

An episode scores 1 when `verifier.verify` finds the prompt's known answer as the reply's one final answer,
else 0. `--reward verifier+format` adds a format term (DeepSeek-R1's "accuracy + format" rewards):
`FORMAT_WEIGHT` (or `verifier+format=W`) for a reply that states one final answer at all, right or wrong,
so that early on, when right answers are rare, the policy still learns to answer in a checkable way.

The answers come from the prompts file (`meta.answer` or `answer`, see `verifier.answer_of`); a prompt
without one is an error naming its line, since a silent 0 would train the policy on noise. The rollout hands
the reward function each episode's prompt messages, so answers are found by the prompt's text; two records
with the same prompt and different answers are an error too. Scores are already on a fixed 0..1 scale, so the
trainer is told their std is 1 (no normalization by the first rollout).
"""

from __future__ import annotations

from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo.rollout import RewardFn
from rlhfkit.verifier import load_answers, prompt_key, verify

VERIFIER = "verifier"
FORMAT_WEIGHT = 0.2  # the format term of `verifier+format`


def is_verifier(spec: str | None) -> bool:
    """Whether a `--reward` value names the verifier rather than a reward-model folder."""
    return bool(spec) and (spec == VERIFIER or spec.startswith(VERIFIER + "+"))


def format_weight(spec: str) -> float:
    """The format term's weight in a `--reward` spec: `verifier` 0, `verifier+format` FORMAT_WEIGHT,
    `verifier+format=W` W."""
    if spec == VERIFIER:
        return 0.0
    term = spec[len(VERIFIER) + 1 :]
    name, _, weight = term.partition("=")
    if name != "format":
        raise RlhfkitError(f"--reward {spec}: expected verifier, verifier+format or verifier+format=W")
    if not weight:
        return FORMAT_WEIGHT
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise RlhfkitError(f"--reward {spec}: the format weight W must be a number >= 0, got '{weight}'")
    return value


def verifier_reward_fn(spec: str, prompts_path: str) -> tuple[RewardFn, dict]:
    """The reward function of a `--reward verifier[+format[=W]]` spec over a prompts file, and the score
    statistics the trainer normalizes with (std 1: the scores are used as they are)."""
    weight = format_weight(spec)
    answers = load_answers(prompts_path, required_by="--reward verifier")

    def score(prompts: list[list[dict]], texts: list[str], _ids: list[list[int]]) -> list[float]:
        out = []
        for messages, text in zip(prompts, texts):
            verdict = verify(text, answers[prompt_key(messages)])
            out.append(float(verdict.correct) + weight * (verdict.reason in ("correct", "wrong")))
        return out

    return score, {"score_std": 1.0}
