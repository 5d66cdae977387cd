"""The FastAPI app: OpenAI's routes over the served models, API-key check, OpenAI-shaped errors everywhere.

    GET  /v1/models                 the aliases being served
    GET  /v1/models/{name}          one of them
    POST /v1/completions            raw continuation (base models)
    POST /v1/chat/completions       a chat reply through the chat template (SFT / RLHF models)
    GET  /health                    liveness, batching and admission counters (no key needed)

Per-request limits (body size and time, JSON depth, choices, tokens, the admission queue) live in
`limits.Limits`; `rlhfkit.body_limit.BodyLimit` applies the transport-level ones and `errors.ServerErrorGuard`
keeps a 500 from closing the connection. Request bodies are decoded, validated and tokenized on worker
threads through the admission queue (`admission.Admission`: a few at once, fair between clients, bounded),
so a flood of large bodies never stalls `/health` or another client's request. A request whose client
disconnects is cancelled, streaming or not (`disconnect.unless_disconnected`).

Request bodies are read and validated by hand (`schemas.parse_request`) rather than by FastAPI's
signature-driven validation, because FastAPI answers bad bodies with 422 and its own shape, while OpenAI
clients expect 400 and `{"error": {...}}`.
"""

from __future__ import annotations

import functools

from fastapi import Depends, FastAPI, Request

from rlhfkit import __version__
from rlhfkit.bearer import bearer_token, key_matches
from rlhfkit.body_limit import BodyLimit
from rlhfkit.serve.admission import Admission, client_of
from rlhfkit.serve.chat import create_chat_completion
from rlhfkit.serve.completions import create_completion
from rlhfkit.serve.continuous import ContinuousBatcher
from rlhfkit.serve.disconnect import unless_disconnected
from rlhfkit.serve.errors import (
    ServerErrorGuard,
    install_handlers,
    invalid_api_key,
    missing_api_key,
    model_not_found,
    openai_error_body,
)
from rlhfkit.serve.limits import Limits, decode_json
from rlhfkit.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    parse_request,
)
from rlhfkit.serve.served import ServedModel


def create_app(
    models: dict[str, ServedModel], api_key: str | None = None, limits: Limits | None = None
) -> FastAPI:
    """An app serving `models` (alias -> served model); with `api_key`, every /v1 route needs it as Bearer.

    `limits`: what one request may ask for (default `Limits()`; see `rlhfkit.serve.limits`)."""
    limits = limits or Limits()
    app = FastAPI(title="rlhfkit serve", version=__version__, docs_url=None, redoc_url=None)
    app.state.limits = limits
    admission = app.state.admission = Admission.from_limits(limits)
    install_handlers(app)
    app.add_middleware(ServerErrorGuard)
    app.add_middleware(  # added last, so it runs first: bodies are bounded before anything else looks
        BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s, render=openai_error_body
    )

    def check_key(request: Request) -> None:
        if not api_key:
            return
        given = bearer_token(request)
        if not given:
            raise missing_api_key()
        if not key_matches(given, api_key):
            raise invalid_api_key(given)

    def lookup(name: str) -> ServedModel:
        if name not in models:
            raise model_not_found(name)
        return models[name]

    def card(name: str) -> ModelCard:
        served = models[name]
        return ModelCard(
            id=name,
            created=served.created,
            root=served.path,
            stage=served.stage,
            max_model_len=served.context_length,
        )

    guarded = [Depends(check_key)]

    @app.get("/v1/models", dependencies=guarded)
    async def list_models() -> dict:
        return ModelList(data=[card(name) for name in models]).model_dump()

    @app.get("/v1/models/{name:path}", dependencies=guarded)
    async def get_model(name: str) -> dict:
        lookup(name)
        return card(name).model_dump()

    async def answer(request: Request, schema, create):
        """Parse, tokenize (both through the admission queue, as this client) and generate; cancelled if the
        client disconnects meanwhile."""
        raw = await request.body()  # already read by BodyLimit; taken before the disconnect watch begins
        offload = functools.partial(admission.run, client_of(request.scope))

        async def work():
            body = await offload(lambda: parse_request(schema, decode_json(raw, limits)))
            return await create(lookup(body.model), body, limits, offload)

        return await unless_disconnected(request, work())

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(request: Request):
        return await answer(request, CompletionRequest, create_completion)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: Request):
        return await answer(request, ChatCompletionRequest, create_chat_completion)

    @app.get("/health")
    async def health() -> dict:
        batching = {}
        for name, served in models.items():
            stats = served.batcher.stats
            batching[name] = {
                "mode": "continuous" if isinstance(served.batcher, ContinuousBatcher) else "static",
                "batches": stats.batches,
                "rows": stats.rows,
                "largest_batch": stats.largest,
                "abandoned_rows": stats.abandoned,
                "interleaved_steps": stats.interleaved,
            }
        queue = {"working": admission.busy, "waiting": admission.queued, "refused": admission.refused}
        return {"status": "ok", "models": list(models), "batching": batching, "admission": queue}

    return app
