"""The FastAPI app: OpenAI's routes over the served models, API-key check, OpenAI-shaped errors everywhere.

    GET  /v1/models                 the aliases being served
    GET  /v1/models/{name}          one of them
    POST /v1/completions            raw continuation (base models)
    POST /v1/chat/completions       a chat reply through the chat template (SFT / RLHF models)
    GET  /health                    liveness and batching counters (no key needed)

Per-request limits (body size and time, JSON depth, choices, tokens) live in `limits.Limits`; the
`RequestGuard` middleware applies the transport-level ones and keeps a 500 from closing the connection.
Request bodies are decoded and validated on a worker thread, off the event loop, so a large body never
stalls `/health` or another client's stream.

Request bodies are read and validated by hand (`schemas.parse_request`) rather than by FastAPI's
signature-driven validation, because FastAPI answers bad bodies with 422 and its own shape, while OpenAI
clients expect 400 and `{"error": {...}}`.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Depends, FastAPI, Request

from rlhfkit import __version__
from rlhfkit.serve.chat import create_chat_completion
from rlhfkit.serve.completions import create_completion
from rlhfkit.serve.errors import (
    install_handlers,
    invalid_api_key,
    missing_api_key,
    model_not_found,
)
from rlhfkit.serve.limits import Limits, RequestGuard, decode_json
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
    install_handlers(app)
    app.add_middleware(RequestGuard, limits=limits)

    def check_key(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise missing_api_key()
        if not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise invalid_api_key(given.strip())

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

    async def parsed(request: Request, schema):
        raw = await request.body()
        return await asyncio.to_thread(lambda: parse_request(schema, decode_json(raw, limits)))

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(request: Request):
        body = await parsed(request, CompletionRequest)
        return await create_completion(lookup(body.model), body, limits)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: Request):
        body = await parsed(request, ChatCompletionRequest)
        return await create_chat_completion(lookup(body.model), body, limits)

    @app.get("/health")
    async def health() -> dict:
        batching = {}
        for name, served in models.items():
            stats = served.batcher.stats
            batching[name] = {
                "batches": stats.batches,
                "rows": stats.rows,
                "largest_batch": stats.largest,
                "abandoned_rows": stats.abandoned,
                "interleaved_steps": stats.interleaved,
            }
        return {"status": "ok", "models": list(models), "batching": batching}

    return app
