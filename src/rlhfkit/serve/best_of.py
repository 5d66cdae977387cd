"""Best-of-n chat replies: sample `best_of` replies, return the `n` the reward model scores highest.

`rlhfkit serve --reranker DIR` loads a reward model next to the served models. A chat request may then ask for
`best_of` (sent through the client's `extra_body`, as vLLM takes it; OpenAI's legacy completions API had the
same name); `--best-of NAME=N` makes it the default of the model served as NAME, so a plain chat client gets
the aligned system the pipeline evaluates (`evaluate --best-of`): the policy's best of N by its reward model.
Serve the folder twice to offer both, e.g. `--model rs=runs/demo/rs --model rs-bo8=runs/demo/rs --best-of
rs-bo8=8`.

Rules (`generation.best_of` picks): a reply cut off at `max_tokens` never beats one that finished; `usage`
counts every sampled token, as OpenAI's did for `best_of`. A streamed request (which OpenAI refused with
`best_of`) gets each picked reply whole, in the usual chunks, once every sample is scored: chat clients that
always stream still work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from rlhfkit.serve.errors import bad_request

MAX_BEST_OF = 20  # OpenAI's limit for `best_of`


@dataclass
class Reranker:
    """A loaded reward model; one scoring at a time (admission workers call it from their threads)."""

    path: str
    model: torch.nn.Module
    tokenizer: object
    max_length: int
    bf16: bool = (
        False  # score under a CPU bf16 autocast, as `evaluate --best-of` does (`Precision.scorer_bf16`),
    )
    # so the served system picks the replies the evaluated one would
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, messages: list[dict], replies: list[tuple[str, bool]], n: int) -> list[int]:
        """Indices of the `n` best of `replies` ((text, finished) pairs), best first."""
        from rlhfkit.generation.best_of import ranked
        from rlhfkit.reward.model import score_conversations

        items = [(messages, [{"role": "assistant", "content": text}]) for text, _ in replies]
        with self.lock:
            scores = score_conversations(
                self.model, self.tokenizer, items, self.max_length, batch_size=32, bf16=self.bf16
            )
        return ranked(scores, [finished for _, finished in replies])[:n]


def load_reranker(path: str, device) -> Reranker:
    from rlhfkit.generation.best_of import load_reranker as load
    from rlhfkit.train.precision import Precision

    model, tokenizer, max_length = load(path, device)
    bf16 = Precision.of(torch.device(device), "auto").scorer_bf16
    return Reranker(path, model, tokenizer, max_length, bf16)


def attach_reranker(models: dict, reranker: str | None, best_of: dict[str, int]) -> None:
    """Load the reward model (once, on the first model's device) and give each served model it and its
    default `best_of`."""
    loaded = None
    if reranker:
        first = next(iter(models.values()))
        loaded = load_reranker(reranker, next(first.model.parameters()).device)
    for name, served in models.items():
        served.reranker, served.best_of = loaded, best_of.get(name, 1)


def parse_best_of(specs: list[str] | None, names: list[str], reranker: str | None) -> dict[str, int]:
    """{served name: default best_of} from `--best-of NAME=N` values, checked."""
    from rlhfkit.generation.best_of import parse_counts

    return parse_counts(specs, names, reranker, most=MAX_BEST_OF, role="served as")


def best_of_for(served, request, n: int) -> int:
    """How many replies to sample for a chat request that wants `n`: its `best_of`, else the model's default
    (`--best-of`), never fewer than `n`; a 400 where the server cannot do it."""
    asked = (request.model_extra or {}).get("best_of")
    if asked is None:
        best_of = max(served.best_of, n)
    elif not isinstance(asked, int) or isinstance(asked, bool) or not 1 <= asked <= MAX_BEST_OF:
        raise bad_request(
            f"'best_of' must be an integer from 1 to {MAX_BEST_OF}.", param="best_of", code="invalid_value"
        )
    elif asked < n:
        raise bad_request(
            "'best_of' must be greater than or equal to 'n'.", param="best_of", code="invalid_value"
        )
    else:
        best_of = asked
    if best_of > n and served.reranker is None:
        raise bad_request(
            "'best_of' needs a reward model to pick with: start the server with --reranker DIR.",
            param="best_of",
        )
    return best_of
