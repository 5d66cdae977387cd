"""What to sample (`SamplingParams`) and what comes back (`Completion`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhfkit.errors import RlhfkitError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; the defaults sample the model's own distribution for up to 64 tokens.

    - `max_new_tokens`: hard cap on generated tokens per prompt (finish reason "length").
    - `temperature`: logits are divided by it; 0 means greedy (argmax), exactly as `do_sample=False`.
    - `top_k`: keep only the k most likely tokens (0 = no limit).
    - `top_p`: keep the smallest set of most likely tokens whose probability reaches p (1.0 = no limit).
    - `stop_token_ids`: a generated token in this set ends the response (finish reason "stop"); the token
      is kept in `Completion.token_ids` (it is the action that ended the episode) but not in the text.
    - `stop_strings`: the response ends as soon as its text contains one of them (needs a tokenizer);
      the text is cut before the stop string, the tokens up to the one that completed it are kept.
    - `seed`: seeds the sampler's own `torch.Generator`; same seed + same prompts + same batch size ->
      same output. `None` draws a fresh seed.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise RlhfkitError(f"max_new_tokens: expected an integer >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise RlhfkitError(f"temperature: expected a number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise RlhfkitError(f"top_k: expected an integer >= 0 (0 = no limit), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise RlhfkitError(f"top_p: expected a number in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop_strings):
            raise RlhfkitError("stop_strings: expected non-empty strings")
        # Accept lists from callers and configs; keep the frozen dataclass hashable.
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One generated response.

    `logprobs[i]` is log p(token_ids[i]) under the model's next-token distribution with logits divided by
    the temperature (temperature 1 when greedy), before top-k / top-p truncation: the quantity PPO's
    policy ratio uses. `text` is set when a tokenizer was given (special tokens skipped).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    text: str | None = None
    prompt_tokens: int = 0
    meta: dict = field(default_factory=dict)
