"""Per-request limits of `rlhfkit serve`, and the admission queue's sizes.

Why: one small request must not be able to hold the server. Without limits a 1 KB body (64 prompts x
n=128 x 64 tokens) asks for 8,192 choices, an 8 MB prompt ties up tokenization, and a client that declares
a large Content-Length and sends little holds a connection open forever. Every limit answers with an
OpenAI-shaped 4xx naming what was too large, before any model work starts (the body limits are enforced by
`rlhfkit.body_limit.BodyLimit`, the middleware the annotation app uses too):

| limit | default | answer |
|---|---|---|
| `max_body_bytes`: request body size (declared or streamed) | 1 MiB | 413 `request_too_large` |
| a negative or malformed Content-Length | - | 400 |
| `body_timeout_s`: time to receive the whole body | 10 s | 408 `request_timeout` |
| `max_json_depth`: nesting of arrays/objects in the body | 32 | 400 `invalid_value` (a lone-surrogate string too) |
| `max_choices`: prompts x n of one request | 128 | 400 `request_too_large` (param `n`) |
| `max_request_tokens`: sum over choices of prompt tokens + max_tokens | 65,536 | 400 `request_too_large` (param `max_tokens`) |
| a prompt longer in characters than its model's context could hold in tokens | `ServedModel.max_prompt_chars` | 400 `context_length_exceeded`, before tokenizing |
| `default_chat_max_tokens`: a chat request without max_tokens | 512 (or the room the context leaves, if less) | - |
| `admission_workers`: bodies parsed and prompts tokenized at once | 2 | - (the rest wait, fairly per client) |
| `max_waiting`: requests waiting for a worker | 64 | 503 `server_overloaded`, with Retry-After |
| `max_waiting_per_client`: of those, from one client | 16 | 429 `rate_limit_exceeded`, with Retry-After |

The queue in front of the workers is `admission.Admission`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rlhfkit.serve.errors import bad_request


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; see the module docstring for the answers to each."""

    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0
    max_json_depth: int = 32
    max_choices: int = 128
    max_request_tokens: int = 65_536
    default_chat_max_tokens: int = 512
    admission_workers: int = 2
    max_waiting: int = 64
    max_waiting_per_client: int = 16

    def check_request(self, prompt_lengths: list[int], n: int, max_tokens: int) -> None:
        """Refuse a request whose choices (prompts x n) or total tokens exceed the limits."""
        choices = len(prompt_lengths) * n
        if choices > self.max_choices:
            raise bad_request(
                f"This request asks for {choices} choices ({len(prompt_lengths)} prompt(s) x n={n}); this "
                f"server answers at most {self.max_choices} choices per request. Lower 'n' or send fewer "
                "prompts per request.",
                param="n",
                code="request_too_large",
            )
        tokens = n * sum(length + max_tokens for length in prompt_lengths)
        if tokens > self.max_request_tokens:
            raise bad_request(
                f"This request asks for {tokens} tokens in all (prompt plus max_tokens={max_tokens}, over "
                f"{choices} choices); this server allows at most {self.max_request_tokens} per request. "
                "Lower 'max_tokens' or 'n', or split the request.",
                param="max_tokens",
                code="request_too_large",
            )


def decode_json(raw: bytes, limits: Limits) -> Any:
    """The body as JSON, or a 400: not JSON, nested deeper than `max_json_depth`, or with broken Unicode."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    except RecursionError:  # the C parser gives up on very deep nesting
        body = None
        _too_deep(limits)
    _check_tree(body, limits)
    return body


def _too_deep(limits: Limits) -> None:
    raise bad_request(
        f"The JSON body is nested more than {limits.max_json_depth} levels deep.", code="invalid_value"
    )


def _check_tree(body: Any, limits: Limits) -> None:
    """Depth and Unicode check without recursion (a deep document must not exhaust the Python stack)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # "\ud800" escapes decode to lone surrogates, which no tokenizer takes
                raise bad_request(
                    "The JSON body contains an invalid Unicode escape (a lone surrogate).",
                    code="invalid_value",
                ) from None
            continue
        if isinstance(value, dict | list):
            if depth > limits.max_json_depth:
                _too_deep(limits)
            children = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            for key, child in children:
                if key is not None:
                    stack.append((key, depth))
                if isinstance(child, dict | list | str):
                    stack.append((child, depth + 1))
