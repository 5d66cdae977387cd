"""`rlhfkit chat`: talk to any checkpoint in the terminal (chat template, or raw completion for a base model)."""

from __future__ import annotations

import argparse
import sys

HELP = "commands: /reset clears the conversation, /exit quits (Ctrl-D too)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a checkpoint in the terminal")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--system", default=None, help="system prompt (persona)")
    p.add_argument("--raw", action="store_true", help="plain text completion (how a base model is used)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.generation import SamplingParams, generate_chat, generate_text
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

    model = load_causal_lm(args.model).eval()
    tokenizer = load_tokenizer(args.model)
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
