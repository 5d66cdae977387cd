"""`rlhfkit generate` (candidates for comparisons, best-of-n) and `rlhfkit chat` (talk to a checkpoint)."""

from __future__ import annotations

import argparse
import sys

from rlhfkit.errors import RlhfkitError

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
    from rlhfkit.config import add_config_command
    from rlhfkit.generation.candidates import CandidatesConfig, run

    add_config_command(
        sub,
        "generate",
        CandidatesConfig,
        run,
        section="candidates",
        required=("model", "prompts", "out"),
        aliases=["candidates"],  # the pipeline stage's name
        help="sample K responses per prompt (candidates for comparisons)",
        description="Sample --n responses to each chat prompt in --prompts with the model in --model and write "
        "them as candidates JSONL to --out.",
    )

    p = sub.add_parser("chat", help="chat with a checkpoint in the terminal")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--system", default=None, help="system prompt (persona)")
    p.add_argument("--raw", action="store_true", help="plain text completion (how a base model is used)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--best-of",
        type=int,
        default=1,
        metavar="N",
        help="answer with the --reranker's favourite of N sampled replies (best-of-n, as `serve --best-of`)",
    )
    p.add_argument(
        "--reranker", default=None, metavar="DIR", help="reward model folder that picks (--best-of)"
    )
    p.add_argument(
        "--tools",
        action="store_true",
        help="let the model call the demo world's tools (lookup, calculator): each call is run here, shown, "
        "and its result handed back before the model goes on (a tool-trained model: pipeline --method "
        "grpo-verifier)",
    )
    p.add_argument(
        "--max-tool-turns", type=int, default=6, help="with --tools: tool calls per reply (default: 6)"
    )
    add_model_options(p)
    p.set_defaults(func=_chat)


def _tool_reply(model, tokenizer, history: list[dict], params, max_tool_turns: int):
    """One reply with the world's tools: the episode is played as a rollout's (`evaluate.tool_episodes`); each
    call and result is printed and added to `history` in the OpenAI format, then the final turn."""
    from rlhfkit.data.tool_calls import BadCall, call_message, parse_tool_call
    from rlhfkit.evaluate.tool_episodes import play_episodes

    out = play_episodes(model, tokenizer, [history], params, max_tool_turns, batch_size=1)[0]
    for message in out.meta["turns"]:
        if message["role"] == "tool":
            print(f"tool> {message['content']}", flush=True)
            history.append({"role": "tool", "content": message["content"]})
            continue
        print(f"call> {message['call']}", flush=True)
        text = message["content"].strip()
        call = parse_tool_call(text)
        if call is None or isinstance(call, BadCall):
            history.append({"role": "assistant", "content": text})
        else:  # what the turn said before its call line stays its content
            history.append(call_message(call, text.rsplit("\n", 1)[0] if "\n" in text else ""))
    return out


def _chat(args: argparse.Namespace) -> int:
    from rlhfkit.generation import SamplingParams, generate_chat, generate_text
    from rlhfkit.generation.loading import load_for_generation

    if args.best_of < 1 or (args.best_of > 1 and not args.reranker):
        raise RlhfkitError(
            "--best-of N: N >= 1, and N > 1 needs --reranker DIR (the reward model that picks)"
        )
    if args.best_of > 1 and args.raw:
        raise RlhfkitError("--best-of: chat mode only (the reward model reads conversations)")
    if args.tools and (args.raw or args.best_of > 1 or args.max_tool_turns < 1):
        raise RlhfkitError(
            "--tools: chat mode, one reply at a time (no --raw, no --best-of), --max-tool-turns >= 1"
        )
    if args.reranker:
        from rlhfkit.reward.judge_mark import refuse_judge

        refuse_judge(args.reranker)  # before the model loads: best-of-n optimizes against its scores
    model, tokenizer = load_for_generation(
        args.model,
        device=args.device,
        dtype=args.dtype,
        chat_template=args.chat_template,
        need_chat_template=not args.raw,
    )
    if args.tools:
        from rlhfkit.data.tool_calls import require_tool_template

        require_tool_template(tokenizer, args.model)
    reranker = None
    if args.best_of > 1:
        from rlhfkit.generation.best_of import load_reranker

        reranker = load_reranker(args.reranker, next(model.parameters()).device)
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
        if args.tools:
            out = _tool_reply(model, tokenizer, history, params, args.max_tool_turns)
        elif reranker is None:
            out = generate_chat(model, tokenizer, [history], params)[0]
        else:
            from rlhfkit.generation.best_of import pick_best_of

            drawn = generate_chat(model, tokenizer, [history] * args.best_of, params)
            out = pick_best_of(drawn, [history], args.best_of, reranker)[0][0]
        history.append({"role": "assistant", "content": out.text})
        print(f"assistant> {out.text}", flush=True)
        sys.stdout.flush()
