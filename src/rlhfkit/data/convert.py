"""Converters from public preference datasets to rlhfkit's pair format.

- Anthropic HH-RLHF: `{"chosen": transcript, "rejected": transcript}` where a transcript is
  `"\n\nHuman: ...\n\nAssistant: ...\n\nHuman: ...\n\nAssistant: ..."`. Both transcripts share the
  conversation up to the final assistant turn, which is what differs.
- TRL preference format: `prompt` (optional), `chosen`, `rejected`, each either a string ("standard") or a
  list of messages ("conversational"). Without a prompt ("implicit prompt"), chosen and rejected hold the
  whole conversation and the prompt is their common beginning.

Both come down to one step: split two conversations into their shared prompt and the two responses after
it (`split_shared_prompt`). A record whose conversations branch at a user turn cannot be a pair of responses
to one prompt, so it is an error naming its line, never a silently skipped record. Fields the pair format
knows (id, category, annotator, margin, label, tie...) are kept; other fields go under `meta`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from rlhfkit.data.comparisons import check_comparison
from rlhfkit.data.sources import RecordSource, record_source
from rlhfkit.errors import RlhfkitError

FORMATS = ("hh", "trl")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
# Fields of the shared pair format copied as they are; anything else is kept under "meta".
_PAIR_FIELDS = ("id", "category", "annotator", "seconds", "created_at", "tie", "margin", "label", "flags")


def parse_hh_transcript(text: object, path: str | Path, line: int, field: str) -> list[dict]:
    """`"\n\nHuman: hi\n\nAssistant: hello"` -> `[{"role": "user", ...}, {"role": "assistant", ...}]`."""
    if not isinstance(text, str):
        raise RlhfkitError.at(path, line, field, f"expected a transcript string, got {type(text).__name__}")
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RlhfkitError.at(path, line, field, "expected a transcript starting with '\\n\\nHuman:'")
    return [
        {"role": _HH_ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2])
    ]


def split_shared_prompt(
    chosen: list[dict], rejected: list[dict], path: str | Path, line: int
) -> tuple[list[dict], list[dict], list[dict]]:
    """Split two conversations into (shared prompt, chosen response, rejected response).

    The prompt is their longest common run of messages, cut short so that both keep at least one message;
    what follows must be assistant messages only.
    """
    shared = 0
    limit = min(len(chosen), len(rejected)) - 1
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    prompt, chosen_tail, rejected_tail = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt:
        raise RlhfkitError.at(path, line, "chosen", "chosen and rejected share no prompt to respond to")
    for name, tail in (("chosen", chosen_tail), ("rejected", rejected_tail)):
        if any(m["role"] != "assistant" for m in tail):
            raise RlhfkitError.at(
                path,
                line,
                name,
                "the two conversations branch before a user turn, so they are not two responses to one prompt",
            )
    return prompt, chosen_tail, rejected_tail


def _pair_record(prompt, chosen, rejected, record: dict, source: str, path, line: int) -> dict:
    out = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    out.update({k: record[k] for k in _PAIR_FIELDS if k in record})
    out.setdefault("id", f"{source}-{line}")
    meta = dict(record.get("meta", {})) if isinstance(record.get("meta"), dict) else {}
    skip = {"prompt", "chosen", "rejected", "meta", *_PAIR_FIELDS}
    meta.update({k: v for k, v in record.items() if k not in skip})
    meta.update({"source": source, "source_line": line})
    out["meta"] = meta
    check_comparison(out, path, line)  # the output must be a valid pair record, field for field
    return out


def hh_to_pair(record: dict, path: str | Path, line: int) -> dict:
    """One HH-RLHF record -> one pair record."""
    for key in ("chosen", "rejected"):
        if key not in record:
            raise RlhfkitError.at(path, line, key, "missing: expected 'chosen' and 'rejected' transcripts")
    chosen = parse_hh_transcript(record.get("chosen"), path, line, "chosen")
    rejected = parse_hh_transcript(record.get("rejected"), path, line, "rejected")
    prompt, chosen_tail, rejected_tail = split_shared_prompt(chosen, rejected, path, line)
    return _pair_record(prompt, chosen_tail, rejected_tail, record, "hh", path, line)


def _as_messages(value: object, role: str, path, line: int, field: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value  # validated as messages when the pair record is checked
    raise RlhfkitError.at(
        path, line, field, f"expected a string or a list of messages, got {type(value).__name__}"
    )


def _common_text_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    prefix = a[:n]
    if n < min(len(a), len(b)):  # do not cut a word in two: back off to the last whitespace
        cut = max(prefix.rfind(" "), prefix.rfind("\n"))
        prefix = prefix[: cut + 1] if cut >= 0 else ""
    return prefix


def trl_to_pair(record: dict, path: str | Path, line: int) -> dict:
    """One TRL preference record (standard or conversational, explicit or implicit prompt) -> one pair record."""
    for key in ("chosen", "rejected"):
        if key not in record:
            if "completion" in record:
                raise RlhfkitError.at(
                    path, line, key, "missing: unpaired preference (KTO) records are not pairs"
                )
            raise RlhfkitError.at(path, line, key, "missing: expected 'chosen' and 'rejected'")
    chosen, rejected = record["chosen"], record["rejected"]
    if "prompt" in record:
        prompt = _as_messages(record["prompt"], "user", path, line, "prompt")
        chosen = _as_messages(chosen, "assistant", path, line, "chosen")
        rejected = _as_messages(rejected, "assistant", path, line, "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        shared = _common_text_prefix(chosen, rejected)
        if not shared.strip():
            raise RlhfkitError.at(
                path, line, "prompt", "missing, and chosen/rejected share no beginning to take as the prompt"
            )
        prompt = [{"role": "user", "content": shared.strip()}]
        chosen = [{"role": "assistant", "content": chosen[len(shared) :].strip()}]
        rejected = [{"role": "assistant", "content": rejected[len(shared) :].strip()}]
    else:
        chosen = _as_messages(chosen, "assistant", path, line, "chosen")
        rejected = _as_messages(rejected, "assistant", path, line, "rejected")
        for key, msgs in (("chosen", chosen), ("rejected", rejected)):
            if not all(isinstance(m, dict) and "role" in m for m in msgs):
                raise RlhfkitError.at(path, line, key, "expected a list of {'role', 'content'} messages")
        prompt, chosen, rejected = split_shared_prompt(chosen, rejected, path, line)
    return _pair_record(prompt, chosen, rejected, record, "trl", path, line)


def convert_records(fmt: str, path: str | Path | RecordSource) -> Iterator[dict]:
    """Pair records converted from every record of a source (`data.sources`) in format `fmt` ("hh" or "trl"),
    one at a time (a caller that writes as it reads holds one record); a source with no records is an error."""
    if fmt not in FORMATS:
        raise RlhfkitError(f"unknown format '{fmt}' (choose from: {', '.join(FORMATS)})")
    convert = hh_to_pair if fmt == "hh" else trl_to_pair
    src = record_source(path)
    src.require_columns(("chosen", "rejected"))
    converted = 0
    for lineno, record in src:
        yield convert(record, src, lineno)
        converted += 1
    if not converted:  # an empty file (or a 0-byte .gz) is a mistake, not a dataset of zero pairs
        raise RlhfkitError(f"{src}: no records to convert (empty input)")


def read_pairs(path: str | Path | RecordSource) -> list[dict]:
    """Pair records from a source of HH-RLHF transcripts or of rlhfkit pairs, detected per record (a record
    with a `prompt` is a pair already); a source with no records is an error."""
    src = record_source(path)
    pairs = [rec if "prompt" in rec else hh_to_pair(rec, src, line) for line, rec in src]
    if not pairs:
        raise RlhfkitError(f"{src}: no comparison records (empty input)")
    return pairs
