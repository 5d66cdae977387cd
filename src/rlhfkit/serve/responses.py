"""What every response of the OpenAI-compatible endpoints shares: its id, creation time, model and fingerprint,
its token usage, and the server-sent-event framing of a stream."""

from __future__ import annotations

import json
import time
import uuid

from rlhfkit.serve.choices import ChoiceBuilder
from rlhfkit.serve.schemas import ChatCompletionRequest, CompletionRequest, Usage
from rlhfkit.serve.served import ServedModel


def response_meta(
    id_prefix: str, served: ServedModel, request: CompletionRequest | ChatCompletionRequest
) -> dict:
    """The fields every response object and stream chunk of one request shares: id, created, model, fingerprint."""
    return {
        "id": f"{id_prefix}-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": served.fingerprint,
    }


def usage_of(prompt_tokens: int, builders: list[ChoiceBuilder]) -> Usage:
    """OpenAI's `usage` of a response: its prompt tokens and the tokens its choices have so far."""
    completion = sum(len(b.tokens) for b in builders)
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion
    )


def sse(payload: dict | str) -> str:
    """One server-sent event line as OpenAI streams them."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


DONE = sse("[DONE]")
