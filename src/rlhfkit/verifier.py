"""The checker of verifiable answers: read a free-text reply's final answer and compare it with the known one.

A prompt record is verifiable when it carries an `answer` (in `meta`, as the demo world writes it, or at the
top level, as converted datasets often do): a number, or a string that is one of the record's `choices`.
Optional fields: `tolerance` (absolute, for numbers; default exact up to float rounding) and `answer_cues`
(words that mark the sentence stating the answer, e.g. "cheapest"; "answer" always counts).

What counts as the reply's final answer (the contract RL optimizes, so it must not be gameable):
1. Answer sentences are the sentences with a cue ("the answer is", "altogether", "in all", "the total is",
   or one of the record's `answer_cues`). When there are some, each states the last number in it (for
   choices: the one choice named in its clause with the cue). Two answer sentences that state different
   values are a contradiction: no credit, however one of them is right.
2. Without an answer sentence the final answer is the last number in the reply (for choices: the one choice
   named in the last sentence that names any).
3. A final answer given as alternatives or a range ("12 or 15", "12-15", "between 12 and 15", "A or B") is a
   contradiction too.
Numbers are read from digits only ("$1,165.00" is 1165; "K3" in a product name is no number); number words
are not read, because "one" is as often a pronoun.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from rlhfkit.errors import RlhfkitError

# a number that is not part of a word ("K3") or of another number; thousands commas only in groups of three
NUMBER = re.compile(r"(?<![\w.,])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
CLAUSE = re.compile(r"[,;:]\s*|\s+(?:but|while|whereas)\s+")
CUES = (r"\banswer\b", r"\baltogether\b", r"\bin all\b", r"\b(?:the|a|grand) total (?:is|of|comes to)\b")
ALTERNATIVE_AFTER = re.compile(r"^\s*(?:or|to|-|–|/)\s*\$?-?\d")
ALTERNATIVE_BEFORE = re.compile(r"(?:\d\s*(?:or|to|-|–|/)|\bbetween\s+\$?-?[\d,.]+\s+and)\s*\$?$")
VERDICTS = ("correct", "wrong", "no_answer", "contradictory")


@dataclass(frozen=True)
class Answer:
    """The known answer of one prompt: a number (`value` float) or one of `choices` (`value` str)."""

    value: float | str
    tolerance: float = 0.0
    choices: tuple[str, ...] = ()
    cues: tuple[str, ...] = ()

    @property
    def is_number(self) -> bool:
        return not isinstance(self.value, str)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # one of VERDICTS
    stated: str | None = None  # the final answer read from the reply, as written


def answer_of(record: dict, path: object = "<prompts>", line: int | None = None) -> Answer | None:
    """A record's `Answer` (from `meta` first, then the top level), None when it has no `answer`; a malformed
    one raises `RlhfkitError` naming the file, line and field."""
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    src, prefix = (meta, "meta.") if "answer" in meta else (record, "")
    if "answer" not in src:
        return None
    value = src["answer"]
    choices = src.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
        raise RlhfkitError.at(path, line, prefix + "choices", "expected a list of non-empty strings")
    cues = src.get("answer_cues", [])
    if not isinstance(cues, list) or not all(isinstance(c, str) and c.strip() for c in cues):
        raise RlhfkitError.at(path, line, prefix + "answer_cues", "expected a list of non-empty strings")
    tolerance = src.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise RlhfkitError.at(path, line, prefix + "tolerance", f"expected a number >= 0, got {tolerance!r}")
    if isinstance(value, str) and choices:
        if value not in choices:
            raise RlhfkitError.at(path, line, prefix + "answer", f"{value!r} is not one of the choices")
        return Answer(value, 0.0, tuple(choices), tuple(cues))
    number = parse_number(value) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise RlhfkitError.at(
            path, line, prefix + "answer", f"expected a number, or a string listed in choices; got {value!r}"
        )
    return Answer(float(number), float(tolerance), (), tuple(cues))


def prompt_key(messages: list[dict]) -> str:
    """A prompt's identity: its turns' roles and texts (what a rollout or an evaluation hands back)."""
    return json.dumps([[m.get("role"), m.get("content")] for m in messages], ensure_ascii=False)


def load_answers(path: object, required_by: str | None = None) -> dict[str, Answer]:
    """{prompt_key: Answer} for the records of a prompts source that carry an answer. With `required_by`
    (the option that needs them), a record without one is an error naming its line; so is a prompt that
    appears twice with different answers."""
    from rlhfkit.data.chats import check_chat
    from rlhfkit.data.sources import record_source

    src = record_source(path)
    answers: dict[str, Answer] = {}
    for lineno, rec in src:
        messages = list(check_chat(rec, src, lineno)["messages"])
        if messages and messages[-1]["role"] == "assistant":  # a prompt, as data.chats.load_prompts reads it
            messages.pop()
        answer = answer_of(rec, src, lineno)
        if answer is None:
            if required_by:
                raise RlhfkitError.at(
                    src,
                    lineno,
                    "meta.answer",
                    f"missing; {required_by} needs every prompt's answer (`rlhfkit world build --verifiable N` "
                    "writes verifiable_train.jsonl with them)",
                )
            continue
        key = prompt_key(messages)
        if answers.get(key, answer) != answer:
            raise RlhfkitError.at(src, lineno, "meta.answer", "the same prompt appears with another answer")
        answers[key] = answer
    return answers


def parse_number(text: str) -> float | None:
    """'$1,165.00' -> 1165.0; None when `text` is not exactly one number."""
    m = NUMBER.fullmatch(text.strip())
    return float(m.group().replace("$", "").replace(",", "")) if m else None


def verify(reply: str, answer: Answer) -> Verdict:
    """Whether `reply` states `answer` as its one final answer (see the module docstring)."""
    stated, contradictory = (_final_number if answer.is_number else _final_choice)(reply or "", answer)
    if contradictory:
        return Verdict(False, "contradictory", stated)
    if stated is None:
        return Verdict(False, "no_answer")
    if answer.is_number:
        value = parse_number(stated)
        ok = value is not None and abs(value - answer.value) <= answer.tolerance + 1e-9 * max(1, abs(value))
    else:
        ok = stated.lower() == str(answer.value).lower()
    return Verdict(ok, "correct" if ok else "wrong", stated)


def _cue_regex(answer: Answer) -> re.Pattern:
    extra = [r"\b" + re.escape(c.lower()) + r"\b" for c in answer.cues]
    return re.compile("|".join((*CUES, *extra)))


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE.split(text.strip()) if s.strip()]


def _final_number(reply: str, answer: Answer) -> tuple[str | None, bool]:
    cue = _cue_regex(answer)
    claims = []
    for sentence in _sentences(reply):
        found = list(NUMBER.finditer(sentence))
        if found and cue.search(sentence.lower()):
            claims.append((sentence, found[-1]))
    if not claims:
        found = list(NUMBER.finditer(reply))
        if not found:
            return None, False
        claims = [(reply, found[-1])]
    values = {parse_number(m.group()) for _, m in claims}
    sentence, last = claims[-1]
    before = sentence[: last.start()].rstrip().lower()
    hedged = ALTERNATIVE_AFTER.match(sentence[last.end() :]) or ALTERNATIVE_BEFORE.search(before)
    return last.group(), len(values) > 1 or bool(hedged)


def _named(text: str, answer: Answer) -> list[str]:
    low = text.lower()
    return [c for c in answer.choices if re.search(r"(?<!\w)" + re.escape(c.lower()) + r"(?!\w)", low)]


def _final_choice(reply: str, answer: Answer) -> tuple[str | None, bool]:
    cue = _cue_regex(answer)
    stated: set[str] = set()
    last: str | None = None
    for sentence in _sentences(reply):
        if not cue.search(sentence.lower()) or not _named(sentence, answer):
            continue
        clauses = [c for c in CLAUSE.split(sentence) if cue.search(c.lower()) and _named(c, answer)]
        named = _named(clauses[-1] if clauses else sentence, answer)
        if len(named) > 1:
            return None, True
        stated.add(named[0])
        last = named[0]
    if last is None:
        naming = [s for s in _sentences(reply) if _named(s, answer)]
        if not naming:
            return None, False
        named = _named(naming[-1], answer)
        return (named[0], False) if len(named) == 1 else (None, True)
    return last, len(stated) > 1
