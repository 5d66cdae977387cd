"""`rlhfkit world tools`: the demo world's tools behind a small HTTP API, a local tool server.

The model server (`rlhfkit serve`) only *proposes* tool calls; the client runs them. This server is where a
client can run them without importing rlhfkit: the seed-style "try it yourself" with two processes, the model
on one port and its tools on another, as function calling works against any hosted model.

- `GET /tools`: the tools in the OpenAI `tools` format (`world.tools.TOOL_SPECS`), ready to offer in a chat
  request.
- `POST /tools/{name}`: the call's `arguments` as the JSON body (`{"item": "Lomar K3 phone"}`). The answer is
  the tool's result, the JSON a `tool` message carries, byte for byte what a training episode's tool turn
  holds. A call the tool cannot run (an unknown item, a refused expression, a missing argument) answers 200
  with the tool's own `{"error": "..."}`: a model learned to read those, so the client passes them on as it
  would a result. Only what is not a call at all is an HTTP error: an unknown tool (404) or a body that is not
  a JSON object (400).

The routes' OpenAPI schema (`/openapi.json`, `/docs`) describes each tool's arguments from the same specs, so
an OpenAPI tool client can discover them. Bodies are capped (`body_limit.BodyLimit`); with an API key every
route needs it as a Bearer token; the server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from rlhfkit.bearer import bearer_token, key_matches
from rlhfkit.body_limit import BodyLimit
from rlhfkit.world.tools import TOOL_SPECS, WORLD_TOOLS

MAX_BODY_BYTES = 16 * 1024  # a call's arguments are a few hundred bytes (the calculator caps its expression)
BODY_TIMEOUT_S = 10.0


def create_tool_app(api_key: str | None = None) -> FastAPI:
    """The tool server's app (see the module docstring); `api_key`: required as `Authorization: Bearer`."""
    app = FastAPI(title="rlhfkit world tools", description=__doc__.split("\n\n")[1])
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, timeout_s=BODY_TIMEOUT_S)

    def authorize(request: Request) -> None:
        if not api_key:
            return
        if not key_matches(bearer_token(request) or "", api_key):
            raise HTTPException(401, "missing or wrong API key (send it as 'Authorization: Bearer KEY')")

    @app.get("/tools")
    def tools(request: Request) -> dict:
        authorize(request)
        return {"tools": TOOL_SPECS}

    def add_route(spec: dict) -> None:
        name = spec["function"]["name"]

        async def call(request: Request) -> Response:
            authorize(request)
            try:
                arguments = json.loads(await request.body() or b"null")
            except ValueError as exc:
                raise HTTPException(400, f"the body is not JSON ({exc})") from None
            if not isinstance(arguments, dict):
                raise HTTPException(
                    400,
                    f"the body must be the call's arguments, a JSON object such as "
                    f"{json.dumps(example_arguments(spec))}",
                )
            return Response(WORLD_TOOLS[name](arguments), media_type="application/json")

        app.add_api_route(
            f"/tools/{name}",
            call,
            methods=["POST"],
            name=name,
            summary=spec["function"]["description"],
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": spec["function"]["parameters"]}},
                }
            },
        )

    for spec in TOOL_SPECS:
        add_route(spec)

    @app.post("/tools/{name}", include_in_schema=False)
    def unknown(name: str, request: Request) -> None:
        authorize(request)
        raise HTTPException(404, f"no tool named {name!r}; the tools are {', '.join(sorted(WORLD_TOOLS))}")

    return app


def example_arguments(spec: dict) -> dict:
    """`{"item": "full name"}`: each required argument with its description, to show what a body looks like."""
    properties = spec["function"]["parameters"]["properties"]
    return {k: properties[k].get("description", "") for k in spec["function"]["parameters"]["required"]}
