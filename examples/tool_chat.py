"""Try it yourself, with tools: a tool-trained model calls the demo world's tools through the OpenAI API.

Train a model that uses the tools (or reuse one), serve it, then ask it questions:

    rlhfkit pipeline --method grpo-verifier --out runs/tools      # world, SFT on tool demos, GRPO
    rlhfkit serve --model tools=runs/tools/sft --port 8000         # or runs/tools/grpo-verifier
    python examples/tool_chat.py --model tools "How much do 3 Lomar K3 phones and 2 Molun L3 umbrellas cost?"
    python examples/tool_chat.py --model tools --prompts runs/tools/world/verifiable_eval.jsonl --limit 5

The script is the client side of OpenAI function calling, with only the official `openai` client: it offers
the world's tools (`lookup(item)`, `calculator(expr)`: `rlhfkit.world.tools.TOOL_SPECS`), and whenever the
model's reply carries `tool_calls` it runs each call here, on this machine, with the world's own tools
(`rlhfkit.world.tools.run_tool`), sends the results back as `tool` messages and asks again, until the model
answers without a call or `--max-turns` calls were made. It prints the conversation as it goes. With
`--prompts` (a JSONL file of chats whose records carry an `answer`, like the world's verifiable_eval.jsonl)
each final answer is also checked by the task's verifier. `--stream` uses the client's streaming API.

With `--tool-server URL` the calls run on a tool server instead, a process of their own, as a hosted model's
tools would (the client needs no rlhfkit for them):

    rlhfkit world tools --port 8001
    python examples/tool_chat.py --model tools --tool-server http://127.0.0.1:8001 "How much is the Lomar K3 phone?"

A demo-world model is small: it makes wrong lookups and wrong sums (docs/methods.md, "Tools and multi-turn
rollouts"). The point is to see the loop, and what the model does with what its tools tell it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import httpx
import openai

from rlhfkit.data.chats import load_prompts
from rlhfkit.data.tool_calls import BadCall, ToolCall
from rlhfkit.errors import RlhfkitError
from rlhfkit.verifier import Answer, answer_of, verify
from rlhfkit.world.tools import TOOL_SPECS, run_tool

DEFAULT_QUESTIONS = [
    "How much is the Lomar K3 phone?",
    "How much do 3 Lomar K3 phones and 2 Molun L3 umbrellas cost?",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Function calling with a tool-trained model and the world's tools."
    )
    p.add_argument("questions", nargs="*", help="what to ask (default: two price questions)")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's OpenAI base URL")
    p.add_argument("--model", default="tools", help="name of the tool-trained model on the server")
    p.add_argument("--api-key", default="not-needed", help="API key, if the server was started with one")
    p.add_argument(
        "--prompts", help="a JSONL file of prompts with answers (e.g. world/verifiable_eval.jsonl)"
    )
    p.add_argument("--limit", type=int, default=3, help="with --prompts: how many to ask")
    p.add_argument("--max-turns", type=int, default=6, help="most tool calls run per question")
    p.add_argument("--max-tokens", type=int, default=64, help="longest reply, in tokens, per turn")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream", action="store_true", help="stream each reply (content and tool calls)")
    p.add_argument(
        "--tool-server",
        help="run the calls on this tool server (`rlhfkit world tools`, e.g. http://127.0.0.1:8001) "
        "instead of in this process; the tools offered are the ones it lists",
    )
    p.add_argument("--tool-key", help="the tool server's API key, if it was started with one")
    return p.parse_args(argv)


class Tools:
    """Where the calls run: here, with the world's own tools, or on a tool server (`rlhfkit world tools`)
    over HTTP. Either way a call the tools cannot run gets an error as its result (the model reads it like any
    other), never an exception here."""

    def __init__(self, server: str | None = None, key: str | None = None) -> None:
        self.http = None
        self.specs = TOOL_SPECS
        if server:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=30)
            listed = self.http.get("/tools")
            listed.raise_for_status()
            self.specs = listed.json()["tools"]

    def run(self, call: dict) -> str:
        """The `tool` message's content for one OpenAI tool call."""
        function = call["function"]
        try:
            arguments = json.loads(function["arguments"] or "{}")
        except json.JSONDecodeError as exc:
            return run_tool(BadCall(function["arguments"], f"the arguments are not valid JSON ({exc.msg})"))
        if not isinstance(arguments, dict):
            return run_tool(BadCall(function["arguments"], "the arguments must be a JSON object"))
        if self.http is None:
            return run_tool(ToolCall(function["name"], arguments))
        answer = self.http.post(f"/tools/{function['name']}", json=arguments)
        if answer.status_code != 200:  # not a call the server runs (an unknown tool): its reason, as an error
            return json.dumps({"error": reason(answer)})
        return answer.text


def reason(answer: httpx.Response) -> str:
    """A refusal's reason: FastAPI's `detail`, else the body as it came."""
    try:
        return str(answer.json().get("detail", answer.text))
    except (ValueError, AttributeError):
        return answer.text


def ask(
    client: openai.OpenAI, args: argparse.Namespace, messages: list[dict], tools: Tools, show: Callable
) -> dict:
    """The model's next message (content and tool calls) as a dict ready to send back."""
    request = {
        "model": args.model,
        "messages": messages,
        "tools": tools.specs,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    if args.stream:
        with client.chat.completions.stream(**request) as stream:
            for event in stream:
                if event.type == "content.delta":
                    show(event.delta, end="")
            message = stream.get_final_completion().choices[0].message
        show("")
    else:
        message = client.chat.completions.create(**request).choices[0].message
    return message.model_dump(include={"role", "content", "tool_calls"}, exclude_none=True)


def converse(
    client: openai.OpenAI,
    args: argparse.Namespace,
    prompt: list[dict],
    show: Callable = print,
    tools: Tools | None = None,
) -> list[dict]:
    """One conversation from `prompt` (its messages, ending with the user's): ask, run the calls the reply
    makes, send their results back, until the model answers without a call or `args.max_turns` calls have run.
    Returns every message."""
    tools = tools or Tools()
    messages = list(prompt)
    for message in messages:
        show(f"{message['role']}: {message['content']}")
    calls_run = 0
    while True:
        if args.stream:
            show("assistant: ", end="")
        message = ask(client, args, messages, tools, show)
        messages.append(message)
        if not args.stream:
            show(f"assistant: {message.get('content') or ''}")
        calls = message.get("tool_calls") or []
        for call in calls:
            show(f"  calls {call['function']['name']}({call['function']['arguments']})")
        if not calls:
            return messages
        if calls_run + len(calls) > args.max_turns:
            show(f"  (not run: {args.max_turns} tool calls is the limit)")
            return messages
        for call in calls:
            result = tools.run(call)
            calls_run += 1
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
            show(f"tool: {result}")


def prompts_of(args: argparse.Namespace) -> list[tuple[list[dict], Answer | None]]:
    """(prompt messages, answer or None): from --prompts (with their answers) or the command line."""
    if not args.prompts:
        return [([{"role": "user", "content": q}], None) for q in args.questions or DEFAULT_QUESTIONS]
    records = load_prompts(args.prompts)[: args.limit]
    return [(r["messages"], answer_of(r, args.prompts)) for r in records]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=1, timeout=120)
    try:
        served = {model.id for model in client.models.list()}
    except openai.APIConnectionError:
        print(f"No server at {args.base_url}. Start one first, for example:")
        print(f"  rlhfkit serve --model {args.model}=runs/tools/sft")
        return 1
    if args.model not in served:
        print(f"The server does not serve {args.model} (it serves: {', '.join(sorted(served))}).")
        return 1
    try:
        prompts = prompts_of(args)
    except RlhfkitError as exc:
        print(exc)
        return 1
    try:
        tools = Tools(args.tool_server, args.tool_key)
    except httpx.HTTPStatusError as exc:  # a server, which said no (a missing or wrong --tool-key)
        print(
            f"The tool server at {args.tool_server} refused: {exc.response.status_code} {reason(exc.response)}"
        )
        return 1
    except httpx.HTTPError as exc:
        print(
            f"No tool server at {args.tool_server} ({exc}). Start one first: rlhfkit world tools --port 8001"
        )
        return 1
    for prompt, answer in prompts:
        messages = converse(client, args, prompt, tools=tools)
        if answer is not None:
            verdict = verify(messages[-1].get("content") or "", answer)
            print(f"  verifier: {'right' if verdict.correct else 'wrong'} ({verdict.reason})")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
