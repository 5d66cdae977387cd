"""Chat turns as the model knows them: its chat template, and the token ids that end its turn.

`end_of_turn_ids(tokenizer, model)` is the one source of stop ids for everything that samples replies
(generation, serve, PPO rollouts, CAI). A reply ends at any of:
- the token that closes an assistant turn in the chat template, found by rendering a short chat whose reply is
  a marker and taking the first special token after it (`<|end|>` for rlhfkit tokenizers, `<|im_end|>` for
  ChatML, `<end_of_turn>` for Gemma, `<|eot_id|>` for Llama 3); a template that cannot be rendered that way
  falls back to `KNOWN_END_OF_TURN`, those of them the vocabulary has as added tokens;
- the tokenizer's eos;
- every eos id of the model's `generation_config` (an int or a list: Qwen lists `<|im_end|>` and
  `<|endoftext|>`), when the model is given.
Why not only eos: Gemma's turns end with `<end_of_turn>`, which is not its eos, so a model stopped on eos
alone runs to the length limit (and PPO charges the missing-end penalty on every response).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.tokenizer import NEUTRAL

# End-of-turn tokens of common chat formats; used when the template cannot be probed.
KNOWN_END_OF_TURN = (
    "<|end|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eot|>",
    "<|END_OF_TURN_TOKEN|>",
)
_MARKER = "rlhfkit-reply-marker"
_PROBES = (
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}],
    [{"role": "assistant", "content": _MARKER}],
)


def end_of_turn_ids(tokenizer, model=None) -> tuple[int, ...]:
    """Token ids that end an assistant turn: the template's end-of-turn token, eos, and (with `model`) every
    eos id of the model's generation config. The template's token comes first (checkpoints store the list)."""
    ids = [*template_end_ids(tokenizer)]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if model is not None:
        ids += model_eos_ids(model)
    return tuple(dict.fromkeys(ids))


def model_eos_ids(model) -> list[int]:
    """The eos ids of a model's generation config (else its config): an int or a list in the file."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]
    return []


def template_end_ids(tokenizer) -> list[int]:
    """The id of the special token that closes an assistant turn in the tokenizer's chat template ([] if none)."""
    added = {str(token): int(i) for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    if getattr(tokenizer, "chat_template", None):
        for messages in _PROBES:
            try:
                rendered = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=False
                )
            except Exception:  # a template may insist on other roles or raise its own errors: try the next
                continue
            if not isinstance(rendered, str) or _MARKER not in rendered:
                continue
            tail = rendered[rendered.index(_MARKER) + len(_MARKER) :]
            found = [(tail.find(token), -len(token), token) for token in added if token in tail]
            if found:
                return [added[min(found)[2]]]
    return [added[token] for token in KNOWN_END_OF_TURN if token in added]


def render_chat(tokenizer, messages: Sequence[dict]) -> str:
    """A chat as the model sees it, opened for the assistant's reply (markers in its text kept as text)."""
    return tokenizer.apply_chat_template(
        guard_messages(tokenizer, messages), tokenize=False, add_generation_prompt=True
    )


def guard_messages(tokenizer, messages: Sequence[dict]) -> list[dict]:
    """`messages` with every special token of the tokenizer typed inside their text (content, a tool call's name
    and arguments) broken by a zero-width space after its first character, so that no content tokenizes into a
    turn boundary (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`) whatever the model's template. rlhfkit's own
    template does the same by itself (`tokenizer.CHAT_TEMPLATE`'s `plain()`, which the code that renders through
    the template directly relies on); this covers the templates of other models. Text without them is unchanged."""
    markers = sorted(
        (
            str(t)
            for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
            if getattr(t, "special", False)
        ),
        key=len,
        reverse=True,
    )

    def plain(value):
        if isinstance(value, str):
            for marker in markers:
                if marker in value:
                    value = value.replace(marker, marker[0] + NEUTRAL + marker[1:])
            return value
        if isinstance(value, dict):
            return {plain(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    guarded = []
    for message in messages:
        message = dict(message)
        for field in ("content", "tool_calls"):
            if field in message:
                message[field] = plain(message[field])
        guarded.append(message)
    return guarded


def require_chat_template(tokenizer, source: object) -> None:
    """A clear error for a model whose tokenizer has no chat template (chats cannot be rendered)."""
    if not getattr(tokenizer, "chat_template", None):
        raise RlhfkitError(
            f"{source}: the model has no chat template; give one with --chat-template FILE (a Jinja template, "
            "e.g. the chat_template of a model of the same family)"
        )


def read_chat_template(path: str | Path) -> str:
    """A Jinja chat template file's text, checked by rendering a short chat with it."""
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    p = Path(path)
    if not p.is_file():
        raise RlhfkitError(f"--chat-template {p}: file not found")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise RlhfkitError(f"--chat-template {p}: the file is empty")
    try:
        render_jinja_template(conversations=[_PROBES[0]], chat_template=text, add_generation_prompt=True)
    except TemplateError as exc:
        raise RlhfkitError(f"--chat-template {p}: not a usable Jinja chat template ({exc})") from None
    return text
