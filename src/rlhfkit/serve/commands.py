"""`rlhfkit serve`: any checkpoints behind an OpenAI-compatible API.

rlhfkit serve --model gpt-3.5-turbo-instruct=runs/demo/base --model gpt-4o=runs/demo/ppo --port 8000
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve checkpoints behind an OpenAI-compatible HTTP API")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a checkpoint folder served under the alias NAME (repeat for more models)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("RLHFKIT_API_KEY"),
        help="require this Bearer key on every /v1 request (default: $RLHFKIT_API_KEY, else no key)",
    )
    p.add_argument(
        "--max-batch-rows", type=int, default=32, help="most choices decoded together (default 32)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the model (default: torch's choice; 1 is often fastest for small models on a busy CPU)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.serve.app import create_app
    from rlhfkit.serve.served import load_served_models
    from rlhfkit.serve.server import run

    if args.max_batch_rows < 1:
        raise RlhfkitError(f"--max-batch-rows: expected an integer >= 1, got {args.max_batch_rows}")
    if args.threads is not None:
        if args.threads < 1:
            raise RlhfkitError(f"--threads: expected an integer >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    models = load_served_models(args.model, max_batch_rows=args.max_batch_rows)
    for name, served in models.items():
        print(f"serving {name} <- {served.path} (context {served.context_length} tokens)", flush=True)
    print(f"OpenAI base URL: http://{args.host}:{args.port}/v1", flush=True)
    try:
        run(create_app(models, api_key=args.api_key), host=args.host, port=args.port)
    finally:
        for served in {id(s.batcher): s for s in models.values()}.values():
            served.close()
    return 0
