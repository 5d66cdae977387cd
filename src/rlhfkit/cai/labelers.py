"""AI labelers: answer a multiple-choice question "(A) or (B)?" with a probability, not just a letter.

A labeler maps request texts (from `prompts.comparison_prompt`) to `Choice`s whose `prob_a` is the
normalized probability of the answer "(A)" against "(B)": P(A) / (P(A) + P(B)). Bai et al. (2022) found these
soft labels train better reward models than hard 0/1 choices. Two kinds:

- `LocalLabeler` (a checkpoint folder): teacher-forces both answers after the request (rendered with the
  chat template, reply opened) and sums each answer's token log-probs, so P("(A)") is exact even when the
  tokenizer splits "(A)" into several tokens. Rows are length-sorted and batched.
- `OpenAILabeler` (`openai:URL#MODEL`, any OpenAI-compatible server): asks for one short greedy reply with
  `logprobs`/`top_logprobs` and reads the probability mass of the alternatives that spell A and B at the
  position where the letter is decided. When the server gives no log-probs (or rejects the option), it falls
  back to sampled votes: `votes` replies at temperature 1, P(A) = votes for A / votes for A or B. Talks HTTP
  with `httpx`; `api="chat"` uses /chat/completions, `api="completions"` the legacy /completions with the
  request text followed by "Answer:". The key comes from `OPENAI_API_KEY` when that is set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from rlhfkit.cai.prompts import ANSWER_A, ANSWER_B, parse_choice
from rlhfkit.errors import RlhfkitError


@dataclass(frozen=True)
class Choice:
    """The labeler's answer to one question."""

    prob_a: float  # P("(A)") / (P("(A)") + P("(B)"))
    method: str  # "logprobs" or "votes"
    option_mass: float | None = None  # P("(A)") + P("(B)") before normalizing: how sure it is of the format
    votes: tuple[int, int] | None = None  # (for A, for B) when sampled
    truncated: bool = False  # the request was cut from the left to fit the model's window


# ---------------------------------------------------------------------------------------------- local model


class LocalLabeler:
    """A local causal LM (any Hugging Face checkpoint with a tokenizer) scoring "(A)" and "(B)"."""

    def __init__(self, model, tokenizer, name: str = "local", batch_size: int = 16) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_dir(
        cls,
        path: str,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "auto",
        chat_template: str | None = None,
    ) -> LocalLabeler:
        """Any model source (`generation.loading`); without a chat template the request is asked as plain text."""
        from rlhfkit.generation.loading import load_for_generation

        model, tokenizer = load_for_generation(
            path, device=device, dtype=dtype, chat_template=chat_template, need_chat_template=False
        )
        return cls(model, tokenizer, name=str(path), batch_size=batch_size)

    def encode(self, text: str) -> tuple[list[int], list[int], list[int]]:
        """(request ids, answer-A ids, answer-B ids) exactly as the model sees them in context."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            prompt = tok(text + "\n\nAnswer:")["input_ids"]
            return prompt, *(
                tok(" " + ans, add_special_tokens=False)["input_ids"] for ans in (ANSWER_A, ANSWER_B)
            )
        from rlhfkit.train.chat_tokens import chat_ids

        user = [{"role": "user", "content": text}]
        # chat_ids: the responses quoted in the request cannot close its turn and write the labeler's answer
        ids = partial(chat_ids, tok)
        prompt = ids(user, True)
        empty = ids([*user, {"role": "assistant", "content": ""}], False)
        suffix = empty[len(prompt) :] if empty[: len(prompt)] == prompt else None
        answers = []
        for ans in (ANSWER_A, ANSWER_B):
            full = ids([*user, {"role": "assistant", "content": ans}], False)
            if (
                suffix is not None
                and full[: len(prompt)] == prompt
                and full[len(full) - len(suffix) :] == suffix
            ):
                answers.append(full[len(prompt) : len(full) - len(suffix)])
            else:  # a template that does not render prefixes consistently: tokenize the answer alone
                answers.append(tok(ans, add_special_tokens=False)["input_ids"])
        return prompt, answers[0], answers[1]

    def judge(self, texts: Sequence[str]) -> list[Choice]:
        encoded = [self.encode(t) for t in texts]
        rows = [(p, a) for p, a_ids, b_ids in encoded for a in (a_ids, b_ids)]
        scores, cut = answer_logprobs(
            self.model, rows, self.batch_size, self.max_positions, _pad(self.tokenizer)
        )
        out = []
        for i in range(len(texts)):
            la, lb = scores[2 * i], scores[2 * i + 1]
            out.append(
                Choice(
                    prob_a=1.0 / (1.0 + math.exp(lb - la)),  # = e^la / (e^la + e^lb), computed stably
                    method="logprobs",
                    option_mass=math.exp(la) + math.exp(lb),
                    truncated=cut[2 * i] or cut[2 * i + 1],
                )
            )
        return out


def _pad(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def answer_logprobs(
    model,
    rows: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    max_positions: int | None,
    pad_id: int,
) -> tuple[list[float], list[bool]]:
    """log P(answer | prompt) = sum of the answer tokens' log-probs, for each (prompt ids, answer ids) row.

    Rows longer than `max_positions` lose prompt tokens from the left (the answer is kept whole); the second
    list says which were cut.
    """
    import torch

    seqs, cut = [], []
    for prompt, answer in rows:
        seq = list(prompt) + list(answer)
        over = max_positions is not None and len(seq) > max_positions
        seqs.append(seq[len(seq) - max_positions :] if over else seq)
        cut.append(bool(over))
    lengths = [len(a) for _, a in rows]
    scores = [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(seqs[i]), reverse=True)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(seqs[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[r, : len(seqs[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            for r, i in enumerate(chunk):
                n, k = len(seqs[i]), lengths[i]
                # logits at position t predict token t + 1: the answer's tokens are seq[n-k:n]
                logp = torch.log_softmax(logits[r, n - k - 1 : n - 1], dim=-1)
                target = ids[r, n - k : n].to(logp.device)
                scores[i] = float(logp.gather(1, target[:, None]).sum())
    return scores, cut


# ---------------------------------------------------------------------------------------------- HTTP endpoint


def parse_openai_spec(spec: str, flag: str = "--labeler") -> tuple[str, str]:
    """`openai:URL#MODEL` -> (base URL without a trailing slash, model name); errors name `flag`."""
    body = spec[len("openai:") :] if spec.startswith("openai:") else spec
    url, sep, model = body.rpartition("#")
    if not sep or not url or not model:
        raise RlhfkitError(
            f"{flag} '{spec}': expected openai:URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#sft"
        )
    if not url.startswith(("http://", "https://")):
        raise RlhfkitError(f"{flag} '{spec}': the URL must start with http:// or https://")
    return url.rstrip("/"), model


class OpenAILabeler:
    """An OpenAI-compatible endpoint as labeler: log-probs when it gives them, sampled votes otherwise."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api: str = "chat",
        top_logprobs: int = 10,
        votes: int = 8,
        max_tokens: int = 4,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        seed: int = 0,
        client=None,
    ) -> None:
        import httpx

        if api not in ("chat", "completions"):
            raise RlhfkitError(f"api: expected 'chat' or 'completions', got '{api}'")
        if votes < 1:
            raise RlhfkitError(f"votes: expected an integer >= 1, got {votes}")
        self.url, self.model, self.api = url.rstrip("/"), model, api
        self.name = f"openai:{self.url}#{model}"
        self.top_logprobs, self.votes, self.max_tokens = top_logprobs, votes, max_tokens
        self.concurrency, self.seed = max(1, concurrency), seed
        self.logprobs_supported: bool | None = None  # learned from the first answers
        headers = {}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers)

    @classmethod
    def from_spec(cls, spec: str, **options) -> OpenAILabeler:
        url, model = parse_openai_spec(spec)
        return cls(url, model, **options)

    def judge(self, texts: Sequence[str]) -> list[Choice]:
        if self.concurrency == 1 or len(texts) == 1:
            return [self.judge_one(t, i) for i, t in enumerate(texts)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self.judge_one, texts, range(len(texts))))

    def judge_one(self, text: str, index: int = 0) -> Choice:
        if self.logprobs_supported is not False:
            positions = self._logprob_positions(text)
            if positions is None:
                self.logprobs_supported = False
            else:
                self.logprobs_supported = True
                decided = letter_probabilities(positions)
                if decided is not None:
                    mass_a, mass_b = decided
                    return Choice(mass_a / (mass_a + mass_b), "logprobs", option_mass=mass_a + mass_b)
        return self._vote(text, index)

    # -- requests --------------------------------------------------------------------------------------

    def _body(self, text: str, **extra) -> tuple[str, dict]:
        if self.api == "chat":
            body = {"model": self.model, "messages": [{"role": "user", "content": text}], **extra}
            return "/chat/completions", body
        return "/completions", {"model": self.model, "prompt": text + "\n\nAnswer:", **extra}

    def _post(self, path: str, body: dict, allow_reject: bool = False) -> dict | None:
        import httpx

        try:
            response = self.client.post(self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise RlhfkitError(f"{self.url}{path}: could not reach the labeler endpoint ({exc})") from None
        if response.status_code >= 400:
            if allow_reject and response.status_code in (400, 422) and "logprob" in response.text.lower():
                return None  # the server does not do log-probs: fall back to votes
            raise RlhfkitError(
                f"{self.url}{path}: labeler endpoint answered HTTP {response.status_code}: {response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError:
            raise RlhfkitError(f"{self.url}{path}: labeler endpoint did not answer JSON") from None

    def _logprob_positions(self, text: str) -> list[tuple[str, dict[str, float]]] | None:
        """[(generated token, {alternative token: log-prob})] for the reply, or None without log-probs."""
        if self.api == "chat":
            extra = {"logprobs": True, "top_logprobs": self.top_logprobs}
        else:
            extra = {"logprobs": self.top_logprobs}
        path, body = self._body(text, max_tokens=self.max_tokens, temperature=0, **extra)
        data = self._post(path, body, allow_reject=True)
        if data is None:
            return None
        try:
            logprobs = data["choices"][0].get("logprobs")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RlhfkitError(f"{self.url}{path}: answer has no 'choices'") from None
        if not logprobs:
            return None
        if self.api == "chat":
            content = logprobs.get("content") or []
            return [
                (
                    e["token"],
                    {
                        **{t["token"]: t["logprob"] for t in e.get("top_logprobs") or []},
                        e["token"]: e["logprob"],
                    },
                )
                for e in content
            ]
        tokens, token_lps = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or [{}] * len(tokens)
        return [(t, {**(top or {}), t: lp}) for t, lp, top in zip(tokens, token_lps, tops) if lp is not None]

    def _vote(self, text: str, index: int) -> Choice:
        counts = {"A": 0, "B": 0}
        replies = 0
        attempts = 0
        while replies < self.votes and attempts < self.votes:
            attempts += 1
            want = self.votes - replies
            path, body = self._body(
                text,
                max_tokens=self.max_tokens,
                temperature=1.0,
                n=want,
                seed=self.seed + 1000 * index + attempts,
            )
            data = self._post(path, body)
            for choice in (data or {}).get("choices", [])[:want]:
                reply = choice.get("message", {}).get("content") if self.api == "chat" else choice.get("text")
                letter = parse_choice(reply or "")
                if letter:
                    counts[letter] += 1
                replies += 1
        decided = counts["A"] + counts["B"]
        prob = counts["A"] / decided if decided else 0.5
        return Choice(prob, "votes", votes=(counts["A"], counts["B"]))


def letter_probabilities(positions: Sequence[tuple[str, dict[str, float]]]) -> tuple[float, float] | None:
    """(P(A), P(B)) at the first reply position where the option letter is decided, or None if never.

    Walks the greedy reply: before the letter appears, the text so far is only blanks and "(". At such a
    position, an alternative token counts for A (or B) when the text so far plus that token spells the option
    ("(A", "A)", " (A)", "A"); the masses are the exponentiated log-probs of those alternatives.
    """
    prefix = ""
    for token, alternatives in positions:
        if prefix.strip().lstrip("(").strip():
            return None  # the reply started with something else: no option letter to read
        mass = {"A": 0.0, "B": 0.0}
        for alt, logprob in alternatives.items():
            letter = parse_choice(prefix + alt)
            if letter:
                mass[letter] += math.exp(logprob)
        if mass["A"] + mass["B"] > 0:
            return mass["A"], mass["B"]
        prefix += token
    return None


def load_labeler(
    spec: str,
    *,
    batch_size: int = 16,
    api: str = "chat",
    votes: int = 8,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: str | None = None,
):
    """`openai:URL#MODEL` -> `OpenAILabeler`; anything else is a local model source -> `LocalLabeler` (on
    `device` in `dtype`, with `chat_template` replacing its own when given)."""
    if spec.startswith("openai:"):
        return OpenAILabeler.from_spec(spec, api=api, votes=votes, seed=seed)
    return LocalLabeler.from_dir(
        spec, batch_size=batch_size, device=device, dtype=dtype, chat_template=chat_template
    )
