"""`run(EvalConfig)`: sample every model on the same prompts, judge, compare, write the results.

Steps: pick the prompts (all, or `n_prompts` taken round-robin over categories so a small sample still
covers every category) -> for each model, sample one response per prompt with the project's generation
engine (same `SamplingParams` and seed for every model) -> score every response with the judge -> win rates
between every pair (`winrates`), a Bradley-Terry/Elo ranking with bootstrap intervals (`ranking`), mean
scores and win rates per category, probe rates (`probes`) -> write `results.json` (everything numeric) and
`responses.jsonl` (one line per prompt with every model's response side by side) into `out`.

Prompts that carry an answer (`verifier.answer_of`: the demo world's `verifiable_*.jsonl`, or a dataset
with an `answer` field) are also checked by the verifier: each model samples `pass_samples - 1` more responses
to them, and `results.json` gets `verifiable` per model: accuracy, pass@k and verdict shares, overall and by
difficulty (`accuracy`); each of their lines in `responses.jsonl` records the first response's `verdict`.

Probes need the gold judge's parts. With `judge="gold"` they come with the scores; with a reward-model judge
they are computed with the gold judge as well when the prompts come from the demo world (their `meta` has a
`task`), and each response then records both `score` (the reward model's) and `gold`.

A pairwise judge (`judge="openai:URL#MODEL"`, see `judges`) compares every pair of models on every prompt in
both orders instead of scoring responses: its verdicts are the win/tie/loss outcomes directly (and the ranking
is fitted to them), a model's `score` on a prompt is its mean P(better) against the others, and each line of
`responses.jsonl` also records the verdicts under `judgements`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.evaluate.accuracy import accuracy_results, verdicts_of
from rlhfkit.evaluate.judges import gold_judge, make_judge, pairwise_judge, parse_judge_spec
from rlhfkit.evaluate.kl import kl_to_first
from rlhfkit.evaluate.probes import PROBES, probe_rates
from rlhfkit.evaluate.ranking import outcome_tensor, rank_outcomes
from rlhfkit.evaluate.text_probes import text_probe_labels, text_probe_rates
from rlhfkit.evaluate.winrates import compared_pairs, counts_from_outcomes
from rlhfkit.train.distributed import (
    finish_distributed,
    init_distributed,
    map_across_ranks,
    pick_device,
    rank_seed,
)

RESULTS = "results.json"
RESPONSES = "responses.jsonl"


@dataclass
class EvalConfig:
    """What to evaluate and how (`rlhfkit evaluate`); the defaults suit the demo world on a CPU."""

    models: dict[str, str] = field(default_factory=dict)  # {display name: model source}, in table order
    prompts: str = (
        ""  # prompt chats: JSONL or any data source (e.g. world/eval_prompts.jsonl); a final reply is dropped
    )
    out: str = "eval"  # output folder for results.json and responses.jsonl
    judge: str = (
        "gold"  # "gold" (demo world), "reward:DIR" (a reward model) or "openai:URL#MODEL" (LLM judge)
    )
    judge_prompt: str = ""  # openai judge: prompt template file ({conversation}, {response_a}, {response_b})
    n_prompts: int = 0  # use N prompts, round-robin over categories; 0: all
    temperature: float = 0.7  # sampling temperature, the same for every model; 0: greedy
    top_p: float = 1.0  # nucleus sampling mass; 1.0: off
    max_new_tokens: int = 128  # length limit per response (per turn with --max-tool-turns)
    batch_size: int = 32  # sequences decoded together
    seed: int = 0  # sampling and bootstrap seed
    bootstrap: int = 1000  # resamples of the prompts for the ranking's confidence intervals; 0: none
    tie_margin: float = 0.0  # score differences up to this are ties (counted half); openai judge: P(A)-P(B)
    quiet: bool = False  # no progress bars or summary table
    pass_samples: int = (
        4  # prompts with an answer: responses per prompt for accuracy and pass@k (k = 1, 2, 4,
    )
    # ... up to this); 1: accuracy only
    device: str = (
        "auto"  # where the models run: auto (the GPU when CUDA is available, else the CPU), cpu, cuda[:N]
    )
    dtype: str = "auto"  # models' dtype: auto (bfloat16 on a bf16-capable GPU, else float32), float32, bfloat16, float16
    chat_template: list[str] | None = None  # Jinja chat template FILE for every model, or NAME=FILE for one
    kl: bool = True  # each model's KL to the first --model, on its own samples (needs --temperature > 0)
    max_tool_turns: int = 0  # > 0: episodes with the world's tools (`evaluate.tool_episodes`); no KL then
    best_of: list[str] | None = None  # NAME=N: --model NAME answers with the best of N samples by --reranker
    # (best-of-n at inference, as `serve --best-of`); list the same folder twice to see both, e.g.
    # --model rs=runs/demo/rs --model rs-bo8=runs/demo/rs --best-of rs-bo8=8
    reranker: str = ""  # reward model folder that picks the --best-of answers (never the judge)


MAX_BEST_OF = 64  # evaluate --best-of N: N from 2 to this


def best_of_counts(cfg: EvalConfig) -> dict[str, int]:
    """{model name: n} from `cfg.best_of`'s NAME=N entries (`generation.best_of.parse_counts`)."""
    from rlhfkit.generation.best_of import parse_counts

    return parse_counts(cfg.best_of, list(cfg.models), cfg.reranker, most=MAX_BEST_OF)


def _check_best_of(cfg: EvalConfig) -> None:
    """`cfg.best_of` parses, and its reranker can pick: a reward model folder, not the judge."""
    if not best_of_counts(cfg):
        return
    if cfg.max_tool_turns > 0:
        raise RlhfkitError(
            "--best-of: not with --max-tool-turns (the reward model reads one reply, not episodes)"
        )
    kind, judge_dir = parse_judge_spec(cfg.judge)
    if kind == "reward" and judge_dir.resolve() == Path(cfg.reranker).resolve():
        raise RlhfkitError(
            f"--reranker {cfg.reranker} is also the judge: best-of-n would be graded by the model that picked it"
        )
    if not (Path(cfg.reranker) / "config.json").is_file():
        raise RlhfkitError(f"--reranker {cfg.reranker}: not a reward model folder (no config.json there)")
    from rlhfkit.reward.judge_mark import refuse_judge

    refuse_judge(cfg.reranker)  # best-of-n optimizes against its scores


def pick_prompts(path: str | Path, n_prompts: int = 0) -> list[dict]:
    """Prompt records (`data.chats.load_prompts`), `n_prompts` round-robin over categories."""
    from rlhfkit.data.chats import load_prompts

    records = []
    for index, record in enumerate(load_prompts(path)):
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        records.append(
            {
                "id": str(record.get("id", f"prompt-{index}")),
                "category": str(record.get("category") or meta.get("task") or ""),
                "messages": record["messages"],
                "meta": meta,
            }
        )
    if n_prompts <= 0 or n_prompts >= len(records):
        return records
    by_category: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_category[record["category"]].append(record)
    queues = list(by_category.values())
    picked: list[dict] = []
    depth = 0
    while len(picked) < n_prompts:
        for queue in queues:
            if depth < len(queue) and len(picked) < n_prompts:
                picked.append(queue[depth])
        depth += 1
    return picked


def _check(cfg: EvalConfig) -> None:
    if not cfg.models:
        raise RlhfkitError("models: expected at least one NAME=DIR model to evaluate")
    from rlhfkit.generation.loading import check_template_targets
    from rlhfkit.models import check_source

    for name, folder in cfg.models.items():
        if not name or "=" in name:
            raise RlhfkitError(f"models: invalid model name '{name}'")
        try:
            check_source(folder)  # a folder, .gguf file, Hub name or adapter folder; loads nothing
        except RlhfkitError as exc:
            raise RlhfkitError(f"model '{name}': {exc}") from None
    check_template_targets(cfg.chat_template, list(cfg.models))
    if not cfg.prompts:
        raise RlhfkitError("prompts: expected a chat JSONL file of evaluation prompts")
    if parse_judge_spec(cfg.judge)[0] == "openai" and len(cfg.models) < 2:
        raise RlhfkitError(f"--judge {cfg.judge}: a pairwise judge needs at least two --model to compare")
    if cfg.bootstrap < 0:
        raise RlhfkitError(f"bootstrap: expected an integer >= 0, got {cfg.bootstrap}")
    if cfg.pass_samples < 1:
        raise RlhfkitError(f"pass_samples: expected an integer >= 1, got {cfg.pass_samples}")
    if cfg.max_tool_turns < 0:
        raise RlhfkitError(f"max_tool_turns: expected an integer >= 0, got {cfg.max_tool_turns}")
    _check_best_of(cfg)


def generate_responses(name: str, folder: str, prompts: list[dict], cfg: EvalConfig, progress=None) -> dict:
    """One sampled response per prompt from the model in `folder`: texts, finish reasons, token counts, time."""
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.generation.loading import load_for_generation, template_for
    from rlhfkit.generation.turns import render_chat

    try:
        model, tokenizer = load_for_generation(
            folder, device=cfg.device, dtype=cfg.dtype, chat_template=template_for(name, cfg.chat_template)
        )
        if cfg.max_tool_turns > 0:
            from rlhfkit.data.tool_calls import require_tool_template

            require_tool_template(tokenizer, folder)
    except RlhfkitError as exc:
        raise RlhfkitError(f"model '{name}': {exc}") from None
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed
    )
    n = best_of_counts(cfg).get(name, 1)  # > 1: answers are best-of-n by the reranker
    label = f"sample {name}" + (f" (best of {n})" if n > 1 else "")
    task = progress.add_task(label, total=len(prompts) * n) if progress else None
    t0 = time.perf_counter()
    # Under torchrun each rank samples its share of the prompts (own seed); every rank gets all, in order.
    info = init_distributed(next(model.parameters()).device)
    params = replace(params, seed=rank_seed(params.seed, info))
    on_chunk = (lambda done: progress.update(task, completed=done)) if progress else None
    if cfg.max_tool_turns > 0:
        from rlhfkit.evaluate.tool_episodes import play_episodes

        def answer(mine, model=model):
            return play_episodes(model, tokenizer, mine, params, cfg.max_tool_turns, cfg.batch_size, on_chunk)
    else:

        def answer(mine, model=model):
            return generate_chat(model, tokenizer, mine, params, batch_size=cfg.batch_size, on_chunk=on_chunk)

    if n > 1:
        from rlhfkit.generation.best_of import load_reranker, pick_best_of
        from rlhfkit.train.precision import Precision

        reranker = load_reranker(cfg.reranker, next(model.parameters()).device)
        bf16 = Precision.of(next(model.parameters()).device, cfg.dtype).scorer_bf16
        sample = answer

        def answer(mine, sample=sample):  # n samples a prompt, prompt-major; the reward model keeps one
            drawn = sample([chat for chat in mine for _ in range(n)])
            return pick_best_of(drawn, mine, n, reranker, bf16=bf16)[0]

    completions = map_across_ranks([p["messages"] for p in prompts], answer, info)
    seconds = time.perf_counter() - t0
    del model
    tokens = [len(c.token_ids) for c in completions]
    kl_inputs = {}  # what the KL to the first model needs (`evaluate.kl`); nothing under --no-kl or tools
    if cfg.kl and cfg.max_tool_turns == 0:
        kl_inputs = {
            "prompt_ids": [  # the prompts as this model's tokenizer renders them
                tokenizer(render_chat(tokenizer, p["messages"]), add_special_tokens=False)["input_ids"]
                for p in prompts
            ],
            "token_ids": [list(c.token_ids) for c in completions],
            "logprobs": [list(c.logprobs) for c in completions],
        }
    return {
        "texts": [(c.text or "").strip() for c in completions],
        "finish": [c.finish_reason for c in completions],
        "tokens": tokens,
        "turns": [c.meta.get("turns", []) for c in completions],
        **kl_inputs,
        "best_of": n,
        "stats": {
            **({"best_of": n, "reranker": cfg.reranker} if n > 1 else {}),
            "seconds": round(seconds, 3),
            "tokens": sum(tokens),
            "tokens_per_s": round(sum(tokens) / max(seconds, 1e-9), 1),
            "mean_tokens": sum(tokens) / max(len(tokens), 1),
            "truncated": sum(c.finish_reason == "length" for c in completions) / max(len(completions), 1),
        },
    }


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=quiet,
    )


def compare(
    scores: dict[str, list[float]],
    prompts: list[dict],
    cfg: EvalConfig,
    probe_parts: dict[str, list[dict]] | None = None,
    outcomes=None,
) -> dict:
    """Win rates, ranking, per-category results and probe rates from the scores (no I/O). The outcomes
    (O[i, j, k]: model i against j on prompt k) are the scores compared (`ranking.outcome_tensor`) unless a
    pairwise judge gave them."""
    import numpy as np

    names = list(scores)
    matrix = np.asarray([list(scores[n]) for n in names], dtype=np.float64)
    if outcomes is None:
        outcomes = outcome_tensor(matrix, cfg.tie_margin)
    counts = counts_from_outcomes(names, outcomes)
    out: dict = {
        "mean_score": {m: sum(s) / max(len(s), 1) for m, s in scores.items()},
        "win_rates": {a: {b: c.win_rate for b, c in row.items()} for a, row in counts.items()},
        "pair_counts": {a: {b: c.as_dict() for b, c in row.items()} for a, row in counts.items()},
        "ranking": rank_outcomes(names, outcomes, matrix, n_bootstrap=cfg.bootstrap, seed=cfg.seed),
    }
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_category[p["category"]].append(i)
    out["by_category"] = {}
    for category, idx in sorted(by_category.items()):
        sub = {m: [s[i] for i in idx] for m, s in scores.items()}
        sub_counts = counts_from_outcomes(names, outcomes[:, :, idx])
        out["by_category"][category] = {
            "n": len(idx),
            "mean_score": {m: sum(v) / len(v) for m, v in sub.items()},
            "win_rates": {a: {b: c.win_rate for b, c in row.items()} for a, row in sub_counts.items()},
        }
    if probe_parts:
        out["probes"] = {
            m: probe_rates((p["category"], p["meta"], parts) for p, parts in zip(prompts, probe_parts[m]))
            for m in scores
        }
        out["probe_labels"] = {
            p.name: {"label": p.label, "higher_is_better": p.higher_is_better} for p in PROBES
        }
    return out


def run(cfg: EvalConfig) -> dict:
    """Evaluate `cfg.models` on `cfg.prompts`; write `results.json` and `responses.jsonl`; return the results."""
    _check(cfg)
    t_start = time.perf_counter()
    prompts = pick_prompts(cfg.prompts, cfg.n_prompts)
    if not prompts:
        raise RlhfkitError(f"{cfg.prompts}: no prompts to evaluate")
    pairwise = None
    if parse_judge_spec(cfg.judge)[0] == "openai":
        pairwise = pairwise_judge(cfg.judge, cfg.judge_prompt or None, seed=cfg.seed)
    else:
        judge = make_judge(cfg.judge)
    world_prompts = any("task" in p["meta"] for p in prompts)
    messages = [p["messages"] for p in prompts]
    metas = [p["meta"] or None for p in prompts]
    from rlhfkit.verifier import load_answers, prompt_key

    known = load_answers(cfg.prompts)
    checked = [i for i, p in enumerate(prompts) if prompt_key(p["messages"]) in known]
    extra = [prompts[i] for i in checked] * (cfg.pass_samples - 1)  # more samples for pass@k

    generated: dict[str, dict] = {}
    info = init_distributed(pick_device(cfg.device))
    with _progress(cfg.quiet or not info.is_main) as progress:
        for name, folder in cfg.models.items():
            g = generate_responses(name, folder, prompts + extra, cfg, progress)
            g.setdefault("turns", [[] for _ in g["texts"]])  # tool episodes' calls; none for a plain reply
            g["extra_texts"] = g["texts"][len(prompts) :]
            g["extra_turns"] = g["turns"][len(prompts) :]
            for key in ("texts", "finish", "tokens", "turns"):
                g[key] = g[key][: len(prompts)]
            generated[name] = g
    if not info.is_main:  # rank 0 judges and writes the results (judges may be stateful or remote)
        finish_distributed(info)
        return {}

    scores: dict[str, list[float]] = {}
    parts: dict[str, list[dict]] = {}
    gold: dict[str, list] = {}
    outcomes = verdicts = None
    if pairwise is not None:
        texts = {name: g["texts"] for name, g in generated.items()}
        with _progress(cfg.quiet) as progress:
            task = progress.add_task(
                f"judge pairs ({pairwise.name})", total=len(texts) * (len(texts) - 1) // 2
            )
            scores, outcomes, verdicts = pairwise.tournament(
                messages, texts, cfg.tie_margin, on_pair=lambda a, b: progress.advance(task)
            )
    for name, g in generated.items():
        if pairwise is None:
            judged = judge(messages, g["texts"], metas)
            scores[name] = [s.total for s in judged]
        if cfg.judge == "gold":
            parts[name] = [s.parts for s in judged]
        elif world_prompts:
            gold[name] = gold_judge(messages, g["texts"], metas)
            parts[name] = [s.parts for s in gold[name]]

    results = {
        "judge": cfg.judge,
        "models": dict(cfg.models),
        "prompts": str(cfg.prompts),
        "n_prompts": len(prompts),
        "categories": sorted({p["category"] for p in prompts}),
        "config": asdict(cfg),
        **compare(scores, prompts, cfg, parts or None, outcomes),
        "generation": {name: g["stats"] for name, g in generated.items()},
    }
    if pairwise is not None:
        results["judge_template"] = pairwise.template  # the exact words the judge was asked with
    if not parts:  # real prompts: the rule-based probes read the responses themselves
        categories = [p["category"] for p in prompts]
        results["probes"] = {
            name: text_probe_rates(categories, g["texts"], g["finish"]) for name, g in generated.items()
        }
        results["probe_labels"] = text_probe_labels()
    if gold:
        results["gold_mean_score"] = {m: sum(s.total for s in v) / len(v) for m, v in gold.items()}
    if checked:
        answers = [known[prompt_key(prompts[i]["messages"])] for i in checked]
        difficulties = [int(prompts[i]["meta"].get("difficulty") or 0) for i in checked]
        kinds = [str(prompts[i]["meta"].get("kind") or prompts[i]["category"]) for i in checked]
        results["verifiable"] = {}
        for name, g in generated.items():
            samples = [[g["texts"][i], *g["extra_texts"][j :: len(checked)]] for j, i in enumerate(checked)]
            checks = verdicts_of(samples, answers)  # (`verdicts` holds a pairwise judge's)
            g["verdicts"] = dict(zip(checked, (v[0].reason for v in checks)))
            results["verifiable"][name] = accuracy_results(checks, difficulties, kinds)
            if cfg.max_tool_turns > 0:
                from rlhfkit.evaluate.tool_episodes import tool_stats

                results["verifiable"][name]["tools"] = tool_stats(
                    [g["turns"][i] for i in checked] + g["extra_turns"]
                )
    if cfg.kl and cfg.max_tool_turns == 0 and len(generated) > 1:
        results["kl_to_first"] = kl_to_first(generated, cfg)
    results["seconds"] = round(time.perf_counter() - t_start, 2)
    results["headline"] = headline_metrics(results)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_responses(out / RESPONSES, prompts, generated, scores, parts, gold, verdicts)
    if not cfg.quiet:
        print_summary(results)
    finish_distributed(info)
    return results


def _write_responses(path: Path, prompts, generated, scores, parts, gold, verdicts=None) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, p in enumerate(prompts):
            responses = {}
            for name, g in generated.items():
                entry = {
                    "text": g["texts"][i],
                    "score": scores[name][i],
                    "finish_reason": g["finish"][i],
                    "tokens": g["tokens"][i],
                }
                if name in parts:
                    entry["parts"] = parts[name][i]
                if name in gold:
                    entry["gold"] = gold[name][i].total
                if i in g.get("verdicts", {}):
                    entry["verdict"] = g["verdicts"][i]
                if g["turns"][i]:
                    entry["turns"] = g["turns"][i]
                responses[name] = entry
            record = {"id": p["id"], "category": p["category"], "prompt": p["messages"], "meta": p["meta"]}
            record["responses"] = responses
            if verdicts is not None:
                record["judgements"] = verdicts[i]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def headline_metrics(results: dict) -> dict[str, float]:
    """A few flat numbers for `pipeline.json`, the win rates first (`compared_pairs`; the pipeline record keeps
    the first ten), then mean score per model, the honesty probe rate, accuracy, KL and Elo."""
    out: dict[str, float] = {}
    names = list(results.get("models", {}))
    for prev, cur in compared_pairs(names):
        out[f"win_{cur}_vs_{prev}"] = round(results["win_rates"][cur][prev], 3)
    for name in names:
        out[f"score_{name}"] = round(results["mean_score"][name], 3)
    for name, probes in (results.get("probes") or {}).items():
        rate = probes.get("honest_unknowable", {}).get("rate")
        if rate is not None:
            out[f"honest_{name}"] = round(rate, 3)
    for name, acc in (results.get("verifiable") or {}).items():
        out[f"accuracy_{name}"] = round(acc["accuracy"], 3)
    for name, kl in (results.get("kl_to_first") or {}).get("models", {}).items():
        if "kl" in kl and name != results["kl_to_first"]["reference"]:
            out[f"kl_{name}"] = round(kl["kl"], 3)
    for row in results.get("ranking", []):
        out[f"elo_{row['model']}"] = round(row["elo"], 1)
    return out


def print_summary(results: dict, console=None) -> None:
    """Ranking, win-rate matrix and probe rates as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    names = list(results["models"])
    rank = Table(title=f"Ranking ({results['judge']} judge, {results['n_prompts']} prompts)")
    for col in ("#", "model", "Elo", "95% CI", "mean score"):
        rank.add_column(col, justify="left" if col == "model" else "right")
    for row in results["ranking"]:
        rank.add_row(
            str(row["rank"]),
            row["model"],
            f"{row['elo']:.0f}",
            f"{row['elo_low']:.0f} to {row['elo_high']:.0f}",
            f"{row['mean_score']:.2f}",
        )
    console.print(rank)
    if len(names) > 1:
        matrix = Table(title="Win rate of row over column (ties count half)")
        matrix.add_column("")
        for n in names:
            matrix.add_column(n, justify="right")
        for a in names:
            matrix.add_row(a, *("-" if a == b else f"{results['win_rates'][a][b]:.0%}" for b in names))
        console.print(matrix)
    probes = results.get("probes")
    if probes:
        table = Table(title="Probe rates")
        table.add_column("probe")
        for n in names:
            table.add_column(n, justify="right")
        for probe, info in results["probe_labels"].items():
            cells = []
            for n in names:
                r = probes[n][probe]
                cells.append("-" if r["rate"] is None else f"{r['rate']:.0%} ({r['hits']}/{r['n']})")
            table.add_row(info["label"], *cells)
        console.print(table)
    kl = results.get("kl_to_first")
    if kl:
        table = Table(title=f"KL to {kl['reference']} (nats per response, on each model's own samples)")
        for col in ("model", "KL", "± s.e.", "per token"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name in names[1:]:
            row = kl["models"][name]
            if "kl" in row:
                at_most = "≤ " if row.get("upper_bound") else ""  # best-of-n: measured part + its bound
                table.add_row(
                    name,
                    f"{at_most}{row['kl']:.3f}",
                    f"{row['kl_stderr']:.3f}",
                    f"{at_most}{row['kl_per_token']:.4f}",
                )
            else:
                table.add_row(name, "-", "-", row["unavailable"])
        console.print(table)
    verifiable = results.get("verifiable")
    if verifiable:
        table = Table(title="Verifiable prompts: accuracy / pass@k, by difficulty (steps)")
        table.add_column("difficulty")
        table.add_column("n", justify="right")
        for n in names:
            table.add_column(n, justify="right")
        first = verifiable[names[0]]
        k = max(first["pass_at"], key=int)

        def cell(r: dict) -> str:
            return (
                f"{r['accuracy']:.0%} / {r['pass_at'][k]:.0%}"
                if k in r["pass_at"]
                else f"{r['accuracy']:.0%}"
            )

        for d, row in first["by_difficulty"].items():
            table.add_row(d, str(row["n"]), *(cell(verifiable[n]["by_difficulty"][d]) for n in names))
        table.add_row(f"all (pass@{k})", str(first["n"]), *(cell(verifiable[n]) for n in names))
        console.print(table)
