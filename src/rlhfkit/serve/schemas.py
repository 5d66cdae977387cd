"""Request and response bodies of the OpenAI API subset rlhfkit serves, as pydantic models.

Requests are validated here (types and ranges, with OpenAI's limits: temperature in [0, 2], top_p in [0, 1],
n <= 128, logprobs <= 5 for completions, top_logprobs <= 20 for chat, at most 4 stop strings) and any
failure becomes a 400 naming the offending parameter (`parse_request`). Fields the server does not
implement are accepted when they ask for the default behaviour and refused with a 400 otherwise, so a
client never silently gets something other than what it asked for. Unknown extra fields are ignored, as
the hosted API does for fields newer than the server.

Responses mirror OpenAI's objects field for field (`text_completion`, `chat.completion`,
`chat.completion.chunk`, `list` of `model`), including explicit nulls the client expects to see.
"""

from __future__ import annotations

import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlhfkit.serve.errors import bad_request

ROLES = ("system", "user", "assistant", "developer", "tool")  # "developer": OpenAI's newer name for "system"


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    """Options shared by completions and chat completions."""

    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)  # not in OpenAI's API; vLLM's extension, sent via extra_body
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=20)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None  # "auto" or "none" (serve/tools.py)
    parallel_tool_calls: bool | None = None  # accepted; a reply makes at most one call
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


def parse_request(model: type[BaseModel], body: Any) -> Any:
    """Validate a decoded JSON body into `model`, or raise a 400 naming the first offending parameter."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param_name(first["loc"])
        if first["type"] == "missing":
            raise bad_request(f"Missing required parameter: '{param}'.", param=param) from None
        given = _SHORT.repr(first.get("input"))  # bounded: the input may be a megabyte-long list
        raise bad_request(
            f"Invalid value for '{param}': {first['msg'].rstrip('.')} (got {given}).",
            param=param,
            code="invalid_value",
        ) from None
    _check_supported(request)
    return request


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 80, 80, 8, 8


def _param_name(loc: tuple) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in ("str", "list[str]", "list[int]", "list[list[int]]", "list[TextPart]", "function-after"):
            continue  # pydantic names the union member it tried; OpenAI names only the field
        else:
            name += f".{part}" if name else str(part)
    return name


def _check_supported(request: _Sampling) -> None:
    """Refuse options that ask for behaviour this server does not implement."""
    unsupported = []
    if request.presence_penalty:
        unsupported.append("presence_penalty")
    if request.frequency_penalty:
        unsupported.append("frequency_penalty")
    if request.logit_bias:
        unsupported.append("logit_bias")
    if isinstance(request, CompletionRequest):
        if request.suffix:
            unsupported.append("suffix")
        if request.best_of not in (None, 1, request.n or 1):
            unsupported.append("best_of")
    if isinstance(request, ChatCompletionRequest):
        if request.functions:
            unsupported.append("functions")
        if request.response_format and request.response_format.get("type", "text") != "text":
            unsupported.append("response_format")
    if unsupported:
        raise bad_request(
            f"'{unsupported[0]}' is not supported by this server (rlhfkit serve).", param=unsupported[0]
        )
    stops = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    if len(stops) > 4:
        raise bad_request("'stop' accepts at most 4 sequences.", param="stop", code="invalid_value")
    if any(not s for s in stops):
        raise bad_request("'stop' sequences must be non-empty strings.", param="stop", code="invalid_value")
    if request.stream_options is not None and not request.stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )


def stop_strings(request: _Sampling) -> tuple[str, ...]:
    return (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())


# -- responses -----------------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None  # pieces of the JSON text; the client joins them


class ToolCallDelta(BaseModel):
    index: int  # which call of the message the piece belongs to
    id: str | None = None  # the first piece of a call carries its id, type and name
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rlhfkit"
    root: str  # the checkpoint folder behind the alias
    stage: str | None = None  # from rlhfkit.json: base, sft, ppo, ...
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
