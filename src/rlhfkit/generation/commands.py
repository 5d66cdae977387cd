"""`rlhfkit generate` (candidates for comparisons, best-of-n) and `rlhfkit chat` (talk to a checkpoint)."""

from __future__ import annotations

import argparse
import sys

HELP = "commands: /reset clears the conversation, /exit quits (Ctrl-D too)"
MODEL_HELP = (
    "the model: a Hugging Face folder, a .gguf file, a Hub name (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) "
    "or a PEFT adapter folder (applied to its base and merged)"
)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--device, --dtype and --chat-template: how a model is run for inference (shared by generate and chat)."""
    from rlhfkit.device import DEVICE_HELP, DTYPE_HELP

    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_HELP} (default auto)")
    p.add_argument("--dtype", default="auto", help=f"weights' dtype: {DTYPE_HELP} (default auto)")
    p.add_argument(
        "--chat-template",
        default=None,
        metavar="FILE",
        help="a Jinja chat template that replaces the model's own (needed for a model that has none)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample K responses per prompt (candidates for comparisons)",
        description="Sample --n responses to each chat prompt in --prompts with the model in --model and write "
        "them as candidates JSONL to --out.",
    )
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--prompts", required=True, help="chat JSONL: {'messages': [...], 'id', 'category', 'meta'}"
    )
    p.add_argument("--out", required=True, help="candidates JSONL to write")
    p.add_argument("--n", type=int, default=1, help="responses per prompt (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    p.add_argument(
        "--top-k", type=int, default=0, help="sample among the k most likely tokens (default 0: off)"
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="length limit per response (default 128)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences decoded together (default 64)")
    p.add_argument(
        "--best-of", type=int, default=1,
        help="best-of-n: sample this many responses per output and keep the reward model's favourite (needs --reward)",
    )  # fmt: skip
    p.add_argument("--reward", default=None, help="reward model folder used by --best-of")
    p.add_argument(
        "--off-prompt", type=int, default=0,
        help="add this many responses sampled for other prompts (of another category when there is one) to each "
        "record, so annotators also rank answers that do not fit the prompt (default 0)",
    )  # fmt: skip
    add_model_options(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("chat", help="chat with a checkpoint in the terminal")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--system", default=None, help="system prompt (persona)")
    p.add_argument("--raw", action="store_true", help="plain text completion (how a base model is used)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    add_model_options(p)
    p.set_defaults(func=_chat)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.generation import SamplingParams
    from rlhfkit.generation.candidates import write_candidates

    if args.n < 1:
        raise RlhfkitError(f"--n: expected an integer >= 1, got {args.n}")
    if args.best_of < 1:
        raise RlhfkitError(f"--best-of: expected an integer >= 1, got {args.best_of}")
    if args.off_prompt < 0:
        raise RlhfkitError(f"--off-prompt: expected an integer >= 0, got {args.off_prompt}")
    if args.best_of > 1 and not args.reward:
        raise RlhfkitError("--best-of needs --reward DIR (the reward model that picks the best sample)")
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_strings=tuple(args.stop),
        seed=args.seed,
    )
    count = write_candidates(args.model, args.prompts, args.out, params, n=args.n, batch_size=args.batch_size,
                             best_of=args.best_of, reward=args.reward, off_prompt=args.off_prompt,
                             device=args.device, dtype=args.dtype, chat_template=args.chat_template)  # fmt: skip
    print(f"generate: {count} prompts x {args.n} responses written to {args.out}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from rlhfkit.generation import SamplingParams, generate_chat, generate_text
    from rlhfkit.generation.loading import load_for_generation

    model, tokenizer = load_for_generation(
        args.model,
        device=args.device,
        dtype=args.dtype,
        chat_template=args.chat_template,
        need_chat_template=not args.raw,
    )
    mode = "completion" if args.raw else "chat"
    print(f"rlhfkit chat: {args.model} ({mode} mode). {HELP}", flush=True)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    turn = 0
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        text = line.strip()
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = history[:1] if args.system else []
            print("(conversation cleared)", flush=True)
            continue
        if not text:
            continue
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed + turn,
        )
        turn += 1
        if args.raw:
            out = generate_text(model, tokenizer, [text], params)[0]
            print(f"model> {text}{out.text}", flush=True)
            continue
        history.append({"role": "user", "content": text})
        out = generate_chat(model, tokenizer, [history], params)[0]
        history.append({"role": "assistant", "content": out.text})
        print(f"assistant> {out.text}", flush=True)
        sys.stdout.flush()
