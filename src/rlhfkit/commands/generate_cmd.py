"""`rlhfkit generate`: K sampled responses per prompt, written as candidates for comparisons.

Reads chat records (`{"messages": [...], "id", "category", "meta"}`); a trailing assistant turn is dropped,
so SFT data works as prompts too. Writes one candidates record per prompt:
`{"id", "prompt": [messages], "completions": [[{"role": "assistant", "content": str}], ... K],
"category", "meta"}`, where `meta` is the prompt's own meta plus a `generation` entry recording the model,
the sampling settings and each completion's finish reason.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample K responses per prompt (candidates for comparisons)",
        description="Sample --n responses to each chat prompt in --prompts with the model in --model and write "
        "them as candidates JSONL to --out.",
    )
    p.add_argument("--model", required=True, help="model folder (Hugging Face causal LM with a tokenizer)")
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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rlhfkit.data.chats import load_prompts
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

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
    records = load_prompts(args.prompts)
    model = load_causal_lm(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    if not getattr(tokenizer, "chat_template", None):
        raise RlhfkitError(f"{args.model}: the tokenizer has no chat template; chat prompts need one")
    prompts = [record["messages"] for record in records]
    draws = args.n * args.best_of  # best-of-n samples n*best_of and keeps the best of each group of best_of
    chats = [messages for messages in prompts for _ in range(draws)]  # prompt-major: K in a row

    with Progress(
        TextColumn("generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("responses"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("generate", total=len(chats))
        completions = generate_chat(
            model,
            tokenizer,
            chats,
            params,
            batch_size=args.batch_size,
            on_chunk=lambda done: progress.update(task, completed=done),
        )

    rewards: list[float] | None = None
    if args.best_of > 1:
        completions, rewards = pick_best_of(completions, prompts, args.best_of, args.reward)

    stem = Path(args.prompts).stem
    ids = [str(record.get("id", f"{stem}-{index}")) for index, record in enumerate(records)]
    categories = [str(record.get("category", "")) for record in records]
    borrowed = borrow_off_prompt(categories, args.n, args.off_prompt, args.seed)
    settings = {
        "model": str(args.model),
        "n": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "best_of": args.best_of,
        "reward": args.reward,
        "off_prompt": args.off_prompt,
    }
    out_records = []
    for index, (record, messages) in enumerate(zip(records, prompts)):
        # The borrowed responses come last; `off_prompt_sources` names the prompt each was sampled for.
        group = completions[index * args.n : (index + 1) * args.n] + [completions[j] for j in borrowed[index]]
        meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
        meta["generation"] = {**settings, "finish_reasons": [c.finish_reason for c in group]}
        if rewards is not None:
            meta["generation"]["rewards"] = rewards[index * args.n : (index + 1) * args.n]
        if borrowed[index]:
            meta["generation"]["off_prompt_sources"] = [ids[j // args.n] for j in borrowed[index]]
        out_records.append(
            {
                "id": ids[index],
                "prompt": messages,
                "completions": [[{"role": "assistant", "content": c.text}] for c in group],
                "category": record.get("category", ""),
                "meta": meta,
            }
        )
    count = write_jsonl(args.out, out_records)
    print(f"generate: {count} prompts x {args.n} responses written to {args.out}")
    return 0


def borrow_off_prompt(categories: list[str], n: int, k: int, seed: int) -> list[list[int]]:
    """For each prompt, indices (into the prompt-major completions) of `k` responses sampled for other prompts.

    Why: a reward model only learns what its comparisons show. The policy's own samples almost always address
    their prompt, so an RM never sees "I have no way of knowing that" (right for an unknowable question)
    answering a how-to question, and may score that reply high everywhere; PPO then finds and repeats it.
    Ranked next to real answers, off-prompt responses teach the RM that a reply must fit its prompt. They are
    drawn from prompts of another category when the data has more than one category.
    """
    if k == 0:
        return [[] for _ in categories]
    rng = random.Random(f"off-prompt:{seed}")
    by_category: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        by_category.setdefault(category, []).append(index)
    other_categories = {
        category: [j for c, members in by_category.items() if c != category for j in members]
        for category in by_category
    }
    out = []
    for index, category in enumerate(categories):
        pool = other_categories[category]
        if not pool:  # one category only: any other prompt
            pool = [j for j in range(len(categories)) if j != index]
        if not pool:
            out.append([])
            continue
        sources = [rng.choice(pool) for _ in range(k)]
        out.append([source * n + rng.randrange(n) for source in sources])
    return out


def pick_best_of(
    completions: list, prompts: list[list[dict]], best_of: int, reward_dir: str
) -> tuple[list, list[float]]:
    """Best-of-n: score every sample with the reward model and keep the highest of each group of `best_of`.

    `completions` are prompt-major: each prompt's n * best_of samples in a row. Returns the kept completions (n
    per prompt, in order) and their reward-model scores. The simplest use of a reward model, and the baseline an
    RL method must beat at the same KL (best-of-n's KL to the sampler is at most log n - (n - 1) / n).
    """
    from rlhfkit.reward_model import load_scorer, score_conversations

    rm, rm_tok, max_length = load_scorer(reward_dir)
    per_prompt = len(completions) // len(prompts)
    items = [
        (prompts[i // per_prompt], [{"role": "assistant", "content": c.text}])
        for i, c in enumerate(completions)
    ]
    scores = score_conversations(rm, rm_tok, items, max_length, batch_size=32)
    kept, kept_scores = [], []
    for start in range(0, len(completions), best_of):
        group = range(start, start + best_of)
        best = max(group, key=lambda i: scores[i])
        kept.append(completions[best])
        kept_scores.append(scores[best])
    return kept, kept_scores
