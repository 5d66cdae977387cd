"""One choice's text and log-probs, built from token events; the same code serves streamed and whole answers.

Why one builder for both: the streamed chunks of a choice must reassemble to exactly the text a
non-streamed request returns. `ChoiceBuilder.add` returns only text that can no longer change:
- the text is always the decode of all tokens so far (so multi-byte characters and tokenizer spacing
  come out as in a single decode) minus a trailing stop token, cut at the first stop string;
- while the choice is running it holds back a trailing partial character (`\\ufffd`) and any tail that
  could still grow into a stop string ("Hel" while the stop is "Hello"), which must never reach the client.
`finish` hands out the rest. Non-streamed requests simply concatenate everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhfkit.serve.batching import TokenEvent

REPLACEMENT_CHAR = "\ufffd"


@dataclass
class ChoiceBuilder:
    tokenizer: object
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    tokens: list[int] = field(default_factory=list)
    events: list[TokenEvent] = field(default_factory=list)
    finish_reason: str | None = None
    _sent: int = 0  # characters handed out so far
    _events_sent: int = 0

    def add(self, event: TokenEvent) -> str:
        """Record a token; return the text that became final."""
        self.tokens.append(event.token_id)
        self.events.append(event)
        safe = self._held_back(self.text())
        return self._take(safe)

    def finish(self, reason: str) -> str:
        self.finish_reason = reason
        return self._take(self.text())

    def text(self) -> str:
        ids = self.tokens
        if ids and ids[-1] in self.stop_token_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        found = [i for i in (text.find(stop) for stop in self.stop_strings) if i >= 0]
        return text[: min(found)] if found else text

    def reported_events(self) -> list[TokenEvent]:
        """Token events to report log-probs for: all but a final stop token (it is not part of the text)."""
        if self.tokens and self.tokens[-1] in self.stop_token_ids:
            return self.events[:-1]  # a stop token always ends the choice
        return self.events

    def new_events(self) -> list[TokenEvent]:
        """Reported events not handed out yet (for streamed log-probs)."""
        fresh = self.reported_events()[self._events_sent :]
        self._events_sent += len(fresh)
        return fresh

    def _held_back(self, text: str) -> str:
        text = text.rstrip(REPLACEMENT_CHAR)
        keep = len(text)
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    keep = min(keep, len(text) - n)
                    break
        return text[:keep]

    def _take(self, text: str) -> str:
        if len(text) <= self._sent:
            return ""
        fresh = text[self._sent :]
        self._sent = len(text)
        return fresh


def token_text(tokenizer, token_id: int) -> str:
    """A token as OpenAI shows it in log-probs: its own decoded text (special tokens spelled out)."""
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprob_entries(tokenizer, events: list[TokenEvent]) -> list[dict]:
    """Chat `logprobs.content`: one entry per token with its top alternatives."""
    entries = []
    for event in events:
        text = token_text(tokenizer, event.token_id)
        entries.append(
            {
                "token": text,
                "logprob": event.logprob,
                "bytes": list(text.encode("utf-8")),
                "top_logprobs": [
                    {"token": (alt := token_text(tokenizer, tid)), "logprob": lp, "bytes": list(alt.encode())}
                    for tid, lp in event.top
                ],
            }
        )
    return entries


def completion_logprobs(
    tokenizer,
    token_ids: list[int],
    logprobs: list[float | None],
    tops: list[tuple[tuple[int, float], ...] | None],
    start_offset: int,
) -> dict:
    """Legacy completions `logprobs`: parallel lists of tokens, log-probs, top alternatives, text offsets."""
    tokens, offsets, top_dicts = [], [], []
    offset = start_offset
    for token_id, top in zip(token_ids, tops):
        text = token_text(tokenizer, token_id)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        top_dicts.append(None if top is None else {token_text(tokenizer, tid): lp for tid, lp in top})
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top_dicts, "text_offset": offsets}
