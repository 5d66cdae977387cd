"""Candidates for comparisons: K sampled responses per prompt, optionally the reward model's best of n, plus
responses borrowed from other prompts.

Reads chat records (`data.chats.load_prompts`: a trailing assistant turn is dropped, so SFT data works as
prompts too). Writes one candidates record per prompt:
`{"id", "prompt": [messages], "completions": [[{"role": "assistant", "content": str}], ... K],
"category", "meta"}`, where `meta` is the prompt's own meta plus a `generation` entry recording the model,
the sampling settings and each completion's finish reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlhfkit.config import require_at_least
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.params import SamplingParams


@dataclass
class CandidatesConfig:
    """`rlhfkit generate`: K sampled responses per prompt (the pipeline's `candidates` stage)."""

    model: str = ""  # the model: a Hugging Face folder, a .gguf file, a Hub name (e.g.
    # HuggingFaceTB/SmolLM2-135M-Instruct) or a PEFT adapter folder (applied to its base and merged)
    prompts: str = ""  # chat JSONL: {'messages': [...], 'id', 'category', 'meta'}
    out: str = "runs/demo/candidates/candidates.jsonl"  # candidates JSONL to write
    n: int = 1  # responses per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass (1.0: off)
    top_k: int = 0  # sample among the k most likely tokens (0: off)
    max_new_tokens: int = 128  # length limit per response
    stop: list[str] = field(default_factory=list)  # stop strings
    seed: int = 0  # sampling seed
    batch_size: int = 64  # sequences decoded together
    best_of: int = 1  # best-of-n: sample this many responses per output and keep the reward model's
    # favourite (needs --reward)
    reward: str | None = None  # reward model folder used by --best-of
    off_prompt: int = 0  # add this many responses sampled for other prompts (of another category when
    # there is one) to each record, so annotators also rank answers that do not fit the prompt
    device: str = "auto"  # where the model runs: auto (the GPU when CUDA is available, else the CPU),
    # cpu, cuda or cuda:N
    dtype: str = "auto"  # weights' dtype: auto (bfloat16 on a GPU that supports it, else float32),
    # float32, bfloat16 or float16
    chat_template: str | None = None  # a Jinja chat template FILE that replaces the model's own (needed
    # for a model that has none)
    quantize: str = "none"  # none, or int8: decode with weight-only int8 copies of the weights (CPU, Llama
    # layout; faster at small batches, see docs/performance.md)


def run(cfg: CandidatesConfig) -> Path:
    """Write the candidates JSONL (`write_candidates`); return its path."""
    if not cfg.model or not cfg.prompts:
        raise RlhfkitError("--model and --prompts are required")
    require_at_least(cfg, 1, "n", "best_of")
    require_at_least(cfg, 0, "off_prompt")
    from rlhfkit.generation.int8_linear import require_quantize

    require_quantize(cfg.quantize, "--quantize")
    if cfg.best_of > 1 and not cfg.reward:
        raise RlhfkitError("--best-of needs --reward DIR (the reward model that picks the best sample)")
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        stop_strings=tuple(cfg.stop),
        seed=cfg.seed,
    )
    count = write_candidates(
        cfg.model,
        cfg.prompts,
        cfg.out,
        params,
        n=cfg.n,
        batch_size=cfg.batch_size,
        best_of=cfg.best_of,
        reward=cfg.reward,
        off_prompt=cfg.off_prompt,
        device=cfg.device,
        dtype=cfg.dtype,
        chat_template=cfg.chat_template,
        quantize=cfg.quantize,
    )
    print(f"generate: {count} prompts x {cfg.n} responses written to {cfg.out}")
    return Path(cfg.out)


def write_candidates(
    model_dir: str,
    prompts_path: str,
    out: str,
    params: SamplingParams,
    *,
    n: int = 1,
    batch_size: int = 64,
    best_of: int = 1,
    reward: str | None = None,
    off_prompt: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: str | None = None,
    quantize: str = "none",
) -> int:
    """Sample `n` responses per prompt (each the best of `best_of` by the reward model in `reward`), add
    `off_prompt` responses sampled for other prompts, write the candidates JSONL; return the record count.
    `model_dir` is any model source (`generation.loading.load_for_generation`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rlhfkit.data.chats import load_prompts
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.generation.loading import load_for_generation
    from rlhfkit.generation.text import generate_chat
    from rlhfkit.train.distributed import finish_distributed, init_distributed, map_across_ranks, rank_seed

    records = load_prompts(prompts_path)
    model, tokenizer = load_for_generation(model_dir, device=device, dtype=dtype, chat_template=chat_template)
    # Under torchrun each rank samples its share of the responses (own seed); rank 0 writes them in order.
    info = init_distributed(next(model.parameters()).device)
    sample_params = replace(params, seed=rank_seed(params.seed, info))
    prompts = [record["messages"] for record in records]
    draws = n * best_of  # best-of-n samples n*best_of and keeps the best of each group of best_of
    chats = [messages for messages in prompts for _ in range(draws)]  # prompt-major: K in a row

    with Progress(
        TextColumn("generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("responses"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("generate", total=len(chats))
        completions = map_across_ranks(
            chats,
            lambda mine: generate_chat(
                model,
                tokenizer,
                mine,
                sample_params,
                batch_size=batch_size,
                on_chunk=lambda done: progress.update(task, completed=done),
                quantize=quantize,
            ),
            info,
        )
    if not info.is_main:  # rank 0 writes the file
        finish_distributed(info)
        return len(records)

    rewards: list[float] | None = None
    if best_of > 1:
        from rlhfkit.generation.best_of import pick_best_of

        completions, rewards = pick_best_of(completions, prompts, best_of, reward)

    stem = Path(prompts_path).stem
    ids = [str(record.get("id", f"{stem}-{index}")) for index, record in enumerate(records)]
    categories = [str(record.get("category", "")) for record in records]
    borrowed = borrow_off_prompt(categories, n, off_prompt, params.seed)
    settings = {
        "model": str(model_dir),
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "max_new_tokens": params.max_new_tokens,
        "seed": params.seed,
        "best_of": best_of,
        "reward": reward,
        "off_prompt": off_prompt,
    }
    out_records = []
    for index, (record, messages) in enumerate(zip(records, prompts)):
        # The borrowed responses come last; `off_prompt_sources` names the prompt each was sampled for.
        group = completions[index * n : (index + 1) * n] + [completions[j] for j in borrowed[index]]
        meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
        meta["generation"] = {**settings, "finish_reasons": [c.finish_reason for c in group]}
        if rewards is not None:
            meta["generation"]["rewards"] = rewards[index * n : (index + 1) * n]
        if borrowed[index]:
            meta["generation"]["off_prompt_sources"] = [ids[j // n] for j in borrowed[index]]
        out_records.append(
            {
                "id": ids[index],
                "prompt": messages,
                "completions": [[{"role": "assistant", "content": c.text}] for c in group],
                "category": record.get("category", ""),
                "meta": meta,
            }
        )
    count = write_jsonl(out, out_records)
    finish_distributed(info)
    return count


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
