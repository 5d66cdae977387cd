"""SL-CAI: the model critiques and revises its own responses against principles; the revisions become SFT data.

For every prompt: sample a response, then N times: pick a principle, ask the model for a critique of the
current response under it (`prompts.critique_prompt`), then for a revision given that critique
(`prompts.revision_prompt`); the revision becomes the current response. The whole chain is kept (it is the
audit trail: which principle changed what, and why), and the final revisions are written as SFT chats
(`prompt + [assistant: final revision]`) that `rlhfkit sft` trains on (Bai et al. 2022, section 3).

Batching: every step runs one batched `generate_chat` over all prompts (1 + 2N calls in total), so the cost is
that of sampling (1 + 2N) responses per prompt. Principles are drawn per prompt from a generator seeded by
(seed, prompt id), without repeats until all principles have been used, so a prompt's chain does not depend on
the other prompts in the file. Each generation call has its own seed derived from `seed`.

A revision that comes back empty does not replace the response; the step is kept in the chain with
`"kept_previous": true`. The demo world teaches exactly that answer when a critique finds nothing to fix, so
a tiny model never has to copy a long answer token by token (it does that badly). Critiques are greedy by
default (`critique_temperature=0`): a critique is a verdict, and sampled verdicts name flaws at random.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rlhfkit.cai.constitution import Constitution, Principle, load_constitution
from rlhfkit.cai.prompts import critique_prompt, revision_prompt
from rlhfkit.config import require_at_least
from rlhfkit.data.chats import load_prompts
from rlhfkit.errors import RlhfkitError


@dataclass
class ReviseConfig:
    """`rlhfkit cai revise`. Defaults: two critique/revision rounds, mildly tempered sampling."""

    model: str = (
        ""  # policy checkpoint that writes responses, critiques and revisions (usually the SFT model)
    )
    prompts: str = ""  # chat JSONL of prompts; a trailing assistant turn is dropped (SL-CAI samples its own)
    out: str = "runs/cai/revisions.jsonl"  # SFT chats: prompt + final revision
    chains: str | None = None  # full chains; default: next to `out` as `<stem>.chains.jsonl`
    constitution: str | None = None  # TOML file; None = the packaged default
    revisions: int = 2  # critique/revision rounds per response (Bai et al. used up to 4)
    max_new_tokens: int = 128  # per response, critique and revision
    temperature: float = 0.7  # below 1: revisions are SFT targets, so favour the model's likelier text
    critique_temperature: float = 0.0  # greedy: a critique is a verdict, so take the model's likeliest one
    top_p: float = 1.0  # nucleus sampling mass; 1.0: off
    batch_size: int = 64  # sequences decoded together
    critic: str | None = None  # checkpoint that writes critiques and revisions; None = `model` does
    verifier: str | None = None  # labeler (folder or openai:URL#MODEL) that must prefer each revision
    min_preference: float = 0.5  # the verifier's P(revision better) needed to keep a revision
    seed: int = 0  # random seed (principle draws and sampling)
    device: str = (
        "auto"  # where the models run: auto (the GPU when CUDA is available, else the CPU), cpu, cuda[:N]
    )
    dtype: str = "auto"  # models' dtype: auto (bfloat16 on a bf16-capable GPU, else float32), float32, bfloat16, float16
    chat_template: str | None = (
        None  # a Jinja chat template FILE for the model and critic (needed if they have none)
    )


def chains_path(cfg: ReviseConfig) -> Path:
    if cfg.chains:
        return Path(cfg.chains)
    out = Path(cfg.out)
    return out.with_name(out.stem + ".chains.jsonl")


def principle_schedule(principles: Sequence[Principle], n: int, seed: int, prompt_id: str) -> list[Principle]:
    """`n` principles for one prompt: random order, no repeats until every principle has been used."""
    rng = random.Random(f"cai-revise:{seed}:{prompt_id}")
    out: list[Principle] = []
    while len(out) < n:
        cycle = list(principles)
        rng.shuffle(cycle)
        out.extend(cycle)
    return out[:n]


def revise_chains(
    model,
    tokenizer,
    records: Sequence[dict],
    constitution: Constitution,
    *,
    revisions: int,
    params,
    critique_params=None,
    verifier=None,
    min_preference: float = 0.5,
    critic=None,
    seed: int = 0,
    batch_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Run SL-CAI on prompt records (`{"messages", "id", "category", "meta"}`); return one chain per record.

    A chain: `{"id", "prompt", "initial", "steps": [{"principle", "critique_request", "critique",
    "revision_request", "revision", "kept_previous", "verified" (when checked)}], "final", "category", "meta"}`.
    `params` is a `SamplingParams` (its seed is replaced per call) for responses and revisions,
    `critique_params` for critiques (default: `params`); `on_progress(n)` gets generated counts.
    `verifier` (a labeler, `labelers.py`) checks each revision: asked the step's principle's comparison
    question in both orders, it must prefer the revision with P > `min_preference`, or the step keeps the
    previous response (`"verified"` records P; `"kept_previous"` is then true). `critic`, a (model, tokenizer)
    pair, writes the critiques and revisions instead of `model` (which always writes the first response).
    """
    from rlhfkit.generation import generate_chat

    if revisions < 0:
        raise RlhfkitError(f"revisions: expected an integer >= 0, got {revisions}")
    prompts = [list(r["messages"]) for r in records]
    ids = [str(r.get("id", f"prompt-{i}")) for i, r in enumerate(records)]
    call_seeds = random.Random(f"cai-revise-calls:{seed}")

    writer = critic or (model, tokenizer)

    def run(chats: list[list[dict]], base=params, who=writer) -> list[str]:
        call_params = replace(base, seed=call_seeds.randrange(2**31))
        done = generate_chat(*who, chats, call_params, batch_size=batch_size)
        if on_progress:
            on_progress(len(chats))
        return [(c.text or "").strip() for c in done]

    schedules = [principle_schedule(constitution.principles, revisions, seed, pid) for pid in ids]
    current = run(prompts, who=(model, tokenizer))
    chains = [
        {
            "id": pid,
            "prompt": prompt,
            "initial": text,
            "steps": [],
            "final": text,
            "category": rec.get("category", ""),
            "meta": dict(rec.get("meta") or {}),
        }
        for pid, prompt, text, rec in zip(ids, prompts, current, records)
    ]
    for step in range(revisions):
        chosen = [schedule[step] for schedule in schedules]
        critiques = run(
            [
                [{"role": "user", "content": critique_prompt(p, resp, pr.critique_request)}]
                for p, resp, pr in zip(prompts, current, chosen)
            ],
            critique_params or params,
        )
        revised = run(
            [
                [{"role": "user", "content": revision_prompt(p, resp, crit, pr.revision_request)}]
                for p, resp, crit, pr in zip(prompts, current, critiques, chosen)
            ]
        )
        verified = _verify(verifier, prompts, current, revised, chosen)
        for i, (pr, crit, rev) in enumerate(zip(chosen, critiques, revised)):
            keep = not rev or (i in verified and verified[i] <= min_preference)
            entry = {
                "principle": pr.name,
                "critique_request": pr.critique_request,
                "critique": crit,
                "revision_request": pr.revision_request,
                "revision": rev,
                "kept_previous": keep,
            }
            if i in verified:
                entry["verified"] = round(verified[i], 6)
            chains[i]["steps"].append(entry)
            if not keep:
                current[i] = rev
    for chain, text in zip(chains, current):
        chain["final"] = text
    return chains


def _verify(verifier, prompts, current, revised, principles) -> dict[int, float]:
    """P(revision better than the current response) per row with a non-empty revision (both orders averaged)."""
    from rlhfkit.cai.label import PairQuestion, ask_both_orders

    rows = [i for i, rev in enumerate(revised) if rev and rev != current[i]]
    if verifier is None or not rows:
        return {}
    items = [
        PairQuestion(prompts[i], revised[i], current[i], [principles[i].comparison_question]) for i in rows
    ]
    return {i: answer.p_x for i, answer in zip(rows, ask_both_orders(verifier, items))}


def sft_chats(chains: Sequence[dict], constitution_name: str = "") -> list[dict]:
    """The final revisions as SFT chats (chains whose final response is empty are left out)."""
    out = []
    for chain in chains:
        if not chain["final"]:
            continue
        meta = dict(chain.get("meta") or {})
        meta["cai"] = {
            "stage": "sl-cai",
            "constitution": constitution_name,
            "principles": [s["principle"] for s in chain["steps"]],
            "revisions": sum(1 for s in chain["steps"] if not s["kept_previous"]),
        }
        out.append(
            {
                "id": f"{chain['id']}-cai",
                "messages": [*chain["prompt"], {"role": "assistant", "content": chain["final"]}],
                "category": chain.get("category", ""),
                "meta": meta,
            }
        )
    return out


def run(cfg: ReviseConfig) -> Path:
    """`rlhfkit cai revise` (the pipeline's `cai_revise` stage): `run_revise`, summarized; return `cfg.out`."""
    result = run_revise(cfg)
    print(
        f"cai revise: {result['prompts']} prompts x {result['revisions']} revisions; {result['changed']} responses "
        f"changed ({result['rejected']} revisions rejected by the verifier); {result['chats']} SFT chats -> {cfg.out}; chains -> {result['chains_path']}"
    )
    return Path(cfg.out)


def write_unrevised(folder: str | Path) -> Path:
    """unrevised.jsonl: the same prompts with the first, unrevised answers (from revisions.chains.jsonl). SFT on
    them (the pipeline's `cai_control`) shows how much of SL-CAI's gain is only fine-tuning on the model's own
    tempered samples, and how much the revisions add."""
    from rlhfkit.data.jsonl import read_jsonl, write_jsonl

    d = Path(folder)
    rows = [
        {
            "id": f"{c['id']}-unrevised",
            "messages": [*c["prompt"], {"role": "assistant", "content": c["initial"]}],
            "category": c.get("category", ""),
        }
        for _, c in read_jsonl(d / "revisions.chains.jsonl")
        if c["initial"]
    ]
    write_jsonl(d / "unrevised.jsonl", rows)
    return d / "unrevised.jsonl"


def run_revise(cfg: ReviseConfig) -> dict:
    """Read prompts, run SL-CAI with the model, write the SFT chats and the chains; return counts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.generation import SamplingParams
    from rlhfkit.generation.loading import load_for_generation

    require_at_least(cfg, 1, "revisions")
    constitution = load_constitution(cfg.constitution)
    records = load_prompts(cfg.prompts)

    def load_chat_model(path: str):  # SL-CAI's requests are chats: a model needs a chat template
        return load_for_generation(path, device=cfg.device, dtype=cfg.dtype, chat_template=cfg.chat_template)

    model, tokenizer = load_chat_model(cfg.model)
    critic = load_chat_model(cfg.critic) if cfg.critic else None
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    critique_params = replace(params, temperature=cfg.critique_temperature)
    verifier = None
    if cfg.verifier:
        from rlhfkit.cai.labelers import load_labeler

        verifier = load_labeler(cfg.verifier, seed=cfg.seed, device=cfg.device, dtype=cfg.dtype)
    total = len(records) * (1 + 2 * cfg.revisions)
    with Progress(
        TextColumn("cai revise"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("generations"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("revise", total=total)
        chains = revise_chains(
            model,
            tokenizer,
            records,
            constitution,
            revisions=cfg.revisions,
            params=params,
            critique_params=critique_params,
            verifier=verifier,
            min_preference=cfg.min_preference,
            critic=critic,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            on_progress=lambda n: progress.advance(task, n),
        )
    chats = sft_chats(chains, constitution.name)
    write_jsonl(cfg.out, chats)
    write_jsonl(chains_path(cfg), chains)
    changed = sum(1 for c in chains if c["final"] != c["initial"])
    rejected = sum(1 for c in chains for s in c["steps"] if s["kept_previous"] and s["revision"])
    return {
        "rejected": rejected,
        "prompts": len(records),
        "chats": len(chats),
        "changed": changed,
        "chains_path": str(chains_path(cfg)),
        "revisions": cfg.revisions,
        "chains": chains,
    }
