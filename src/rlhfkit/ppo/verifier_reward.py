"""`--reward verifier`: the task's checker as the reward (RLVR), instead of a reward model.

An episode scores 1 when `verifier.verify` finds the prompt's known answer as the reply's one final answer,
else 0. `--reward verifier+format` adds a format term (DeepSeek-R1's "accuracy + format" rewards):
`FORMAT_WEIGHT` (or `verifier+format=W`) for a reply that states one final answer at all, right or wrong,
so that early on, when right answers are rare, the policy still learns to answer in a checkable way.
`--reward verifier+process` (or `verifier+process=W`, with `--max-tool-turns`) adds W (`PROCESS_WEIGHT`)
times the share of the task's steps the episode's tool calls did (`ppo.process_reward`: right look-ups, the
right number from the calculator), a process reward the world checks step by step. Terms combine:
`verifier+format+process=0.3`. With `--process-model DIR` the process term is a learned process reward model's
judgment instead (`prm.score`: the weakest tool call's P(right)), and the prompts need no `meta.steps`.

The answers come from the prompts file (`meta.answer` or `answer`, see `verifier.answer_of`); a prompt
without one is an error naming its line, since a silent 0 would train the policy on noise. The rollout hands
the reward function each episode's prompt messages, so answers are found by the prompt's text; two records
with the same prompt and different answers are an error too. Scores are already on a fixed 0..1 scale, so the
trainer is told their std is 1 (no normalization by the first rollout).
"""

from __future__ import annotations

from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo.process_reward import process_score
from rlhfkit.ppo.rollout import RewardFn
from rlhfkit.verifier import load_answers, prompt_key, verify

VERIFIER = "verifier"
FORMAT_WEIGHT = 0.2  # the format term of `verifier+format`
PROCESS_WEIGHT = 0.5  # the process term of `verifier+process`
TERMS = {"format": FORMAT_WEIGHT, "process": PROCESS_WEIGHT}


def is_verifier(spec: str | None) -> bool:
    """Whether a `--reward` value names the verifier rather than a reward-model folder."""
    return bool(spec) and (spec == VERIFIER or spec.startswith(VERIFIER + "+"))


def term_weights(spec: str) -> dict[str, float]:
    """The extra terms' weights in a `--reward` spec: `verifier` none, `verifier+format` {format: 0.2},
    `verifier+format=W+process` {format: W, process: 0.5}."""
    weights: dict[str, float] = {}
    for term in spec.split("+")[1:]:
        name, _, weight = term.partition("=")
        if name not in TERMS or name in weights:
            raise RlhfkitError(
                f"--reward {spec}: expected verifier, optionally with +format[=W] and +process[=W], each once"
            )
        if not weight:
            weights[name] = TERMS[name]
            continue
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise RlhfkitError(f"--reward {spec}: the {name} weight W must be a number >= 0, got '{weight}'")
        weights[name] = value
    return weights


def format_weight(spec: str) -> float:
    """The format term's weight in a `--reward` spec (0 without one)."""
    return term_weights(spec).get("format", 0.0)


def verifier_reward_fn(
    spec: str, prompts_path: str, process_model: str = "", device="cpu"
) -> tuple[RewardFn, dict]:
    """The reward function of a `--reward verifier[+format[=W]][+process[=W]]` spec over a prompts file, and the
    score statistics the trainer normalizes with (std 1: the scores are used as they are). `process_model`: a
    trained PRM folder that scores the process term instead of the world's step check (`prm.score`), on `device`."""
    weights = term_weights(spec)
    weight, process = weights.get("format", 0.0), weights.get("process", 0.0)
    answers = load_answers(prompts_path, required_by="--reward verifier")
    steps = load_steps(prompts_path) if "process" in weights and not process_model else {}
    prm = None
    if process_model and process:
        from rlhfkit.prm.score import ProcessModel

        prm = ProcessModel(process_model, device)

    def score(prompts: list[list[dict]], texts: list[str], _ids: list[list[int]], turns=None) -> list[float]:
        learned = None
        if prm is not None and turns is not None:
            learned = prm.episode_scores(prompts, [t or [] for t in turns])
        out = []
        for i, (messages, text) in enumerate(zip(prompts, texts)):
            key = prompt_key(messages)
            verdict = verify(text, answers[key])
            value = float(verdict.correct) + weight * (verdict.reason in ("correct", "wrong"))
            if learned is not None:
                value += process * learned[i]
            elif process and turns is not None:
                value += process * process_score(steps.get(key, []), turns[i] or [])
            out.append(value)
        return out

    score.reads_turns = "process" in weights  # the rollout hands it each episode's tool turns
    return score, {"score_std": 1.0}


def load_steps(prompts_path: str) -> dict[str, list[dict]]:
    """{prompt_key: the task's `meta.steps`} for the records of a prompts file that have them."""
    from rlhfkit.data.chats import load_prompts

    out = {}
    for record in load_prompts(prompts_path):
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        if isinstance(meta.get("steps"), list):
            out[prompt_key(record["messages"])] = meta["steps"]
    return out
