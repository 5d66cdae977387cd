"""`rlhfkit serve`: any checkpoints behind an OpenAI-compatible API.

rlhfkit serve --model gpt-3.5-turbo-instruct=runs/demo/pretrain --model gpt-4o=runs/demo/ppo --port 8000
rlhfkit serve --model base=SmolLM2-135M-Instruct.Q4_1.gguf --model rlhf=runs/smol/ppo_adapter
"""

from __future__ import annotations

import argparse
import os


def add_listen_flags(p: argparse.ArgumentParser, port: int, port_help: str, guarded: str) -> None:
    """`--host` (127.0.0.1), `--port` and `--api-key` (a Bearer key required on `guarded`) of an HTTP server
    command: `serve` and `world tools`."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=port, help=port_help)
    p.add_argument(
        "--api-key",
        default=os.environ.get("RLHFKIT_API_KEY"),
        help=f"require this Bearer key on {guarded} (default: $RLHFKIT_API_KEY, else no key)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.device import DEVICE_HELP, DTYPE_HELP

    p = sub.add_parser("serve", help="serve checkpoints behind an OpenAI-compatible HTTP API")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=SOURCE",
        help="a model served under the alias NAME (repeat for more models): a Hugging Face folder, a .gguf file, "
        "a Hub name or a PEFT adapter folder (applied to its base and merged)",
    )
    p.add_argument("--device", default="auto", help=f"where the models run: {DEVICE_HELP} (default auto)")
    p.add_argument("--dtype", default="auto", help=f"weights' dtype: {DTYPE_HELP} (default auto)")
    p.add_argument(
        "--chat-template",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="a Jinja chat template replacing a model's own: FILE for every model, NAME=FILE for one (repeatable); "
        "a model without any template serves /v1/completions only",
    )
    add_listen_flags(p, 8000, "port (default 8000)", "every /v1 request")
    p.add_argument(
        "--batching",
        choices=("continuous", "static"),
        default="continuous",
        help="continuous: requests join and leave the decode batch at every step (Llama-layout models on the "
        "CPU; others fall back to static); static: batches run to completion, interleaved (default continuous)",
    )
    p.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: decode with weight-only int8 copies of the weights (CPU, Llama-layout models; faster at "
        "small batches, see docs/performance.md); the model itself is unchanged (default none)",
    )
    p.add_argument(
        "--max-batch-rows",
        type=int,
        default=32,
        help="most choices decoded together: the KV cache pool's slots with continuous batching (default 32)",
    )
    p.add_argument(
        "--max-active-batches",
        type=int,
        default=4,
        help="static batching: most batches decoded at once, interleaved step by step, so a small request never "
        "waits for a large one (default 4)",
    )
    # Defaults are `rlhfkit.serve.limits.Limits`'s (not imported here: it would load FastAPI for every command).
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="largest request body in bytes; larger ones get 413 (default 1048576)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send its whole body; then 408 (default 10)",
    )
    p.add_argument(
        "--max-choices",
        type=int,
        default=128,
        help="most choices (prompts x n) per request (default 128)",
    )
    p.add_argument(
        "--max-request-tokens",
        type=int,
        default=65_536,
        help="most tokens per request: prompt + max_tokens summed over its choices (default 65536)",
    )
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=512,
        help="reply length cap of a chat request that sets no max_tokens (default 512)",
    )
    p.add_argument(
        "--admission-workers",
        type=int,
        default=2,
        help="request bodies parsed and prompts tokenized at once; the rest wait in a queue, fair between "
        "clients (default 2)",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=64,
        help="requests that may wait for an admission worker; more get 503 with Retry-After (default 64)",
    )
    p.add_argument(
        "--max-waiting-per-client",
        type=int,
        default=16,
        help="of those, from one client (its API key, else its address); more get 429 (default 16)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=3.0,
        help="on SIGTERM or Ctrl-C, seconds the requests in flight get to finish before they are cancelled "
        "and the server stops (default 3)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of each model's worker thread, which runs all its torch work (default: torch's choice; "
        "the server's own thread keeps one; 1 can be faster on a CPU busy with other jobs)",
    )
    p.add_argument(
        "--reranker",
        default=None,
        metavar="DIR",
        help="a reward model folder that picks best-of-n chat replies: requests may send 'best_of' (in "
        "extra_body), and --best-of sets a model's default (serve/best_of.py)",
    )
    p.add_argument(
        "--best-of",
        action="append",
        default=[],
        metavar="NAME=N",
        help="the model served as NAME answers every chat request with the --reranker's favourite of N "
        "replies, as `evaluate --best-of` measures it (repeatable; a streamed reply comes whole once picked)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.serve.app import create_app
    from rlhfkit.serve.best_of import attach_reranker, parse_best_of
    from rlhfkit.serve.limits import Limits
    from rlhfkit.serve.served import load_served_models, parse_model_spec
    from rlhfkit.serve.server import run

    for flag in (
        "max_batch_rows",
        "max_active_batches",
        "max_body_bytes",
        "max_choices",
        "max_request_tokens",
        "admission_workers",
        "max_waiting",
        "max_waiting_per_client",
    ):
        if getattr(args, flag) < 1:
            name = "--" + flag.replace("_", "-")
            raise RlhfkitError(f"{name}: expected an integer >= 1, got {getattr(args, flag)}")
    if args.default_max_tokens < 1:
        raise RlhfkitError(f"--default-max-tokens: expected an integer >= 1, got {args.default_max_tokens}")
    if not args.body_timeout > 0:
        raise RlhfkitError(f"--body-timeout: expected a number of seconds > 0, got {args.body_timeout}")
    if not args.shutdown_grace >= 0:
        raise RlhfkitError(f"--shutdown-grace: expected a number of seconds >= 0, got {args.shutdown_grace}")
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout,
        max_choices=args.max_choices,
        max_request_tokens=args.max_request_tokens,
        default_chat_max_tokens=args.default_max_tokens,
        admission_workers=args.admission_workers,
        max_waiting=args.max_waiting,
        max_waiting_per_client=args.max_waiting_per_client,
    )
    if args.threads is not None and args.threads < 1:
        raise RlhfkitError(f"--threads: expected an integer >= 1, got {args.threads}")
    import torch

    # The models' worker threads run the decoding with `threads` CPU threads each; this thread (loading, HTTP)
    # keeps one: once it has run parallel ops, the workers' steps run about 2x slower (`serve.batching.BatchWorker`).
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(1)
    # A bad --best-of or --reranker is refused before any model loads.
    best_of = parse_best_of(args.best_of, [parse_model_spec(m)[0] for m in args.model], args.reranker)
    if args.reranker:
        from rlhfkit.reward.judge_mark import refuse_judge

        refuse_judge(args.reranker)
    models = load_served_models(
        args.model,
        device=args.device,
        dtype=args.dtype,
        chat_templates=args.chat_template,
        max_batch_rows=args.max_batch_rows,
        max_active_batches=args.max_active_batches,
        batching=args.batching,
        quantize=args.quantize,
        threads=threads,
    )
    attach_reranker(models, args.reranker, best_of)
    for name, served in models.items():
        picks = f", best of {served.best_of} by {args.reranker}" if served.best_of > 1 else ""
        print(f"serving {name} <- {served.path} (context {served.context_length} tokens{picks})", flush=True)
    print(f"OpenAI base URL: http://{args.host}:{args.port}/v1", flush=True)
    try:
        app = create_app(models, api_key=args.api_key, limits=limits)
        run(app, host=args.host, port=args.port, shutdown_grace_s=args.shutdown_grace)
    finally:
        for served in {id(s.batcher): s for s in models.values()}.values():
            served.close()
    return 0
