"""Try it yourself: what RLHF changes, seen side by side through the OpenAI API.

Start a server with a base model and an RLHF model (any names you like), then run this script:

    rlhfkit serve --model base=runs/demo/pretrain --model rlhf=runs/demo/ppo --port 8000
    python examples/try_it_yourself.py --base-url http://127.0.0.1:8000/v1 --base base --rlhf rlhf

It uses only the official `openai` client, so it runs unchanged against any OpenAI-compatible server
(point `--base` at a completion model and `--rlhf` at a chat model). Three experiments:

1. A bare topic. The base model was trained to continue documents, so it continues the topic as text;
   the RLHF model treats it as a request and answers it.
2. Questions nobody can answer (the future, uninhabited islands, private facts). A base model continues
   with whatever sounds plausible; the RLHF model was rewarded for saying it cannot know.
3. One question under two system personas. The base model has no notion of a system prompt; the RLHF
   model changes its style (terse expert vs. teacher for a young child) and keeps the answer.

The base model is always called through `/v1/completions` with a plain text prompt (that is how a base
model is used), the RLHF model through `/v1/chat/completions`. Sampling is greedy by default
(`--temperature 0`) so the comparison is repeatable.
"""

from __future__ import annotations

import argparse
import sys

import openai
from rich.console import Console
from rich.table import Table

TOPICS = ["Jupiter", "The elephant", "Marie Curie"]
UNANSWERABLE = [
    "Who will win the 2038 FIFA World Cup?",
    "What is the population of Bouvet Island?",
    "What did Charles Darwin say at breakfast on March 3, 1851?",
]
QUESTION = "What is the capital of Peru?"
PERSONAS = {
    "terse expert": "You are a terse expert. Answer in as few words as possible.",
    "teacher for a child": "You are a kind teacher talking to a seven-year-old. Use simple words and short sentences.",
}
# Words an answer uses when it admits it cannot know (shown as a hint, not a measurement).
ADMITS = ("not know", "don't know", "cannot", "can't", "no way to", "unknown", "impossible", "not possible")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Compare a base model and an RLHF model through the OpenAI API.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's OpenAI base URL")
    p.add_argument("--base", default="base", help="name of the base (pretrained-only) model on the server")
    p.add_argument("--rlhf", default="rlhf", help="name of the RLHF (or SFT) model on the server")
    p.add_argument("--api-key", default="not-needed", help="API key, if the server was started with one")
    p.add_argument("--max-tokens", type=int, default=60, help="longest answer, in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=None, help="console width (default: the terminal's)")
    return p.parse_args(argv)


class Models:
    """The two models behind one client, asked the way each is meant to be used."""

    def __init__(self, client: openai.OpenAI, args: argparse.Namespace):
        self.client = client
        self.args = args
        self.sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}

    def base(self, text: str) -> str:
        """The base model continues `text`; only the continuation's first paragraph is kept."""
        reply = self.client.completions.create(
            model=self.args.base, prompt=text, stop=["\n\n"], **self.sampling
        )
        return reply.choices[0].text.strip()

    def rlhf(self, question: str, system: str | None = None) -> str:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": question})
        reply = self.client.chat.completions.create(model=self.args.rlhf, messages=messages, **self.sampling)
        return reply.choices[0].message.content.strip()


def side_by_side(
    console: Console, title: str, rows: list[tuple[str, str, str]], left: str, right: str
) -> None:
    table = Table(title=title, show_lines=True, expand=True, title_justify="left")
    table.add_column("asked", style="bold", ratio=1)
    table.add_column(left, ratio=2)
    table.add_column(right, ratio=2)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def bare_topics(models: Models, console: Console) -> None:
    rows = [(topic, models.base(topic), models.rlhf(topic)) for topic in TOPICS]
    side_by_side(
        console,
        "1. A bare topic: the base model continues it, the RLHF model answers it",
        rows,
        f"base ({models.args.base}): continues the text",
        f"RLHF ({models.args.rlhf}): answers",
    )


def unanswerable(models: Models, console: Console) -> None:
    rows = []
    for question in UNANSWERABLE:
        answer = models.rlhf(question)
        admits = any(word in answer.lower() for word in ADMITS)
        mark = "[green](says it cannot know)[/green]" if admits else "[yellow](answers anyway)[/yellow]"
        rows.append((question, models.base(f"Question: {question}\nAnswer:"), f"{answer}\n{mark}"))
    side_by_side(
        console,
        "2. Questions nobody can answer: the RLHF model should say so",
        rows,
        f"base ({models.args.base})",
        f"RLHF ({models.args.rlhf})",
    )


def personas(models: Models, console: Console) -> None:
    rows = []
    for name, system in PERSONAS.items():
        base = models.base(f"{system}\n\nQuestion: {QUESTION}\nAnswer:")
        rows.append((f"{name}:\n{system}", base, models.rlhf(QUESTION, system=system)))
    side_by_side(
        console,
        f"3. One question, two personas: {QUESTION!r}",
        rows,
        f"base ({models.args.base})",
        f"RLHF ({models.args.rlhf})",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=args.width)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=1, timeout=120)
    try:
        served = {model.id for model in client.models.list()}
    except openai.APIConnectionError:
        console.print(f"[red]No server at {args.base_url}.[/red] Start one first, for example:")
        console.print(
            f"  rlhfkit serve --model {args.base}=runs/demo/pretrain --model {args.rlhf}=runs/demo/ppo"
        )
        return 1
    except openai.AuthenticationError:
        console.print(
            "[red]The server wants an API key:[/red] pass the one it was started with as --api-key."
        )
        return 1
    missing = [name for name in (args.base, args.rlhf) if name not in served]
    if missing:
        console.print(
            f"[red]The server does not serve {', '.join(missing)}[/red] (it serves: {', '.join(sorted(served))})."
        )
        return 1
    models = Models(client, args)
    console.print(
        f"Comparing [bold]{args.base}[/bold] (base) and [bold]{args.rlhf}[/bold] (RLHF) at {args.base_url}\n"
    )
    bare_topics(models, console)
    unanswerable(models, console)
    personas(models, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
