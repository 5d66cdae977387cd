"""Stop strings: find when a response's text first contains one, and cut the text there.

Checking decodes only a tail window of the response after each new token. A match that the newest
token completes lies within the last `4 * len(stop) + 1` tokens, because every token contributes at least
one byte and a character is at most four UTF-8 bytes; any earlier match was seen at an earlier step.
So a step costs one short `decode` per live row, however long the response grows.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    def __init__(self, tokenizer, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = tuple(stop_strings)
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 1

    def __bool__(self) -> bool:
        return bool(self.stops)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def hit(self, token_ids: Sequence[int]) -> bool:
        """Whether the text of `token_ids` (a response so far) contains a stop string."""
        tail = self.decode(token_ids[-self.window :])
        return any(stop in tail for stop in self.stops)

    def cut(self, text: str) -> str:
        """`text` up to (not including) the earliest stop string."""
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        return text[: min(found)] if found else text
