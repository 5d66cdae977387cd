"""CLI for Constitutional AI: `rlhfkit constitution show` and `rlhfkit cai revise|label|world-data|world-eval`."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    con = sub.add_parser("constitution", help="the principles Constitutional AI critiques and labels by")
    csub = con.add_subparsers(dest="constitution_command", metavar="ACTION", required=True)
    show = csub.add_parser(
        "show", help="print a constitution (default: the packaged one) after validating it"
    )
    show.add_argument("--constitution", help="constitution TOML file (default: the packaged default)")
    show.add_argument(
        "--toml", action="store_true", help="print the packaged default's TOML text (a template)"
    )
    show.set_defaults(func=_show)

    cai = sub.add_parser("cai", help="Constitutional AI: SL-CAI revisions and RL-CAI AI labels")
    asub = cai.add_subparsers(dest="cai_command", metavar="ACTION", required=True)

    r = asub.add_parser(
        "revise",
        help="SL-CAI: sample, critique and revise responses; write the revisions as SFT chats",
        description="For each prompt: sample a response, then --revisions times pick a principle, ask the model "
        "for a critique and a revision. Writes SFT chats (prompt + final revision) to --out and the full "
        "chains to --chains (default: <out>.chains.jsonl).",
    )
    r.add_argument("--model", required=True, help="policy checkpoint folder (usually the SFT model)")
    r.add_argument(
        "--prompts", required=True, help="chat JSONL of prompts (a trailing assistant turn is dropped)"
    )
    r.add_argument("--constitution", help="constitution TOML (default: the packaged default)")
    r.add_argument("--out", required=True, help="SFT chats JSONL to write")
    r.add_argument("--chains", help="chains JSONL to write (default: next to --out, <stem>.chains.jsonl)")
    r.add_argument("--revisions", type=int, default=2, help="critique/revision rounds (default 2)")
    r.add_argument(
        "--max-new-tokens", type=int, default=128, help="per response/critique/revision (default 128)"
    )
    r.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="sampling temperature of responses and revisions (default 0.7)",
    )
    r.add_argument(
        "--critic", help="checkpoint that writes the critiques and revisions (default: --model itself)"
    )
    r.add_argument(
        "--verifier",
        help="labeler (folder or openai:URL#MODEL) that must prefer each revision under its principle, else the step keeps the previous response",
    )
    r.add_argument(
        "--min-preference",
        type=float,
        default=0.5,
        help="the verifier's P(revision better) needed to keep it (default 0.5)",
    )
    r.add_argument(
        "--critique-temperature",
        type=float,
        default=0.0,
        help="sampling temperature of critiques (default 0: greedy)",
    )
    r.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default 1.0: off)")
    r.add_argument("--batch-size", type=int, default=64, help="sequences decoded together (default 64)")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.set_defaults(func=_revise)

    lab = asub.add_parser(
        "label",
        help="RL-CAI: soft-label candidate pairs with an AI labeler asking the constitution's questions",
        description="For each pair of candidate responses, ask the labeler each sampled principle's "
        "multiple-choice question in both orders; the soft label is the averaged normalized probability of "
        "(A)/(B). Writes pairwise comparisons with `label` = P(chosen is better).",
    )
    lab.add_argument(
        "--labeler", required=True, help="checkpoint folder, or openai:URL#MODEL for an endpoint"
    )
    lab.add_argument("--candidates", required=True, help="candidates JSONL (from `rlhfkit generate --n K`)")
    lab.add_argument("--constitution", help="constitution TOML (default: the packaged default)")
    lab.add_argument("--out", required=True, help="comparisons JSONL to write")
    lab.add_argument(
        "--principles-per-pair", type=int, default=2, help="principles averaged per pair (default 2)"
    )
    lab.add_argument("--max-pairs-per-prompt", type=int, default=0, help="0 = all C(K,2) pairs (default)")
    lab.add_argument(
        "--batch-size", type=int, default=16, help="local labeler: rows scored together (default 16)"
    )
    lab.add_argument("--api", choices=("chat", "completions"), default="chat",
                     help="endpoint labeler: /chat/completions (default) or legacy /completions")  # fmt: skip
    lab.add_argument(
        "--votes", type=int, default=8, help="endpoint without log-probs: samples per question (default 8)"
    )
    lab.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    lab.add_argument(
        "--categories", nargs="+", default=None,
        help="label only candidates records of these categories (default: all), e.g. the harmlessness "
        "prompts of a hybrid run whose helpfulness labels come from people",
    )  # fmt: skip
    lab.set_defaults(func=_label)

    w = asub.add_parser(
        "world-data",
        help="demo world: demonstrations of critiques, revisions and multiple-choice judgments for SFT",
        description="Write CAI demonstrations generated by the demo world (not by a model) into --out: "
        "critiques.jsonl, revisions.jsonl, judgments.jsonl, cai_demos.jsonl (all, shuffled) and cai_world.json.",
    )
    w.add_argument("--world", required=True, help="demo world folder (from `rlhfkit world build`)")
    w.add_argument("--out", required=True, help="output folder")
    w.add_argument("--constitution", help="constitution TOML (default: the packaged default)")
    w.add_argument("--chains", type=int, default=1500, help="critique+revision demonstrations (default 1500)")
    w.add_argument("--judgments", type=int, default=2000, help="multiple-choice judgments (default 2000)")
    w.add_argument(
        "--max-words", type=int, default=120, help="longest demonstration kept, in words (default 120)"
    )
    w.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    w.set_defaults(func=_world_data)

    e = asub.add_parser(
        "world-eval", help="demo world: gold-judge gains of revisions and agreement of AI labels"
    )
    e.add_argument("--chains", help="chains JSONL from `cai revise`")
    e.add_argument("--comparisons", help="comparisons JSONL from `cai label`")
    e.add_argument("--rlhf-comparisons", help="the RLHF branch's human rankings, counted for comparison")
    e.add_argument("--out", help="also write the numbers as JSON here")
    e.set_defaults(func=_world_eval)


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlhfkit.cai.constitution import default_constitution_text, load_constitution

    if args.toml:
        print(default_constitution_text(), end="")
        return 0
    c = load_constitution(args.constitution)
    console = Console(highlight=False)
    console.print(f"[bold]{c.name}[/bold]  ({c.source}, {len(c.principles)} principles)")
    if c.description:
        console.print(c.description)
    for i, p in enumerate(c.principles, 1):
        aspects = f"  [dim]aspects: {', '.join(p.aspects)}[/dim]" if p.aspects else ""
        console.print(f"\n[bold]{i}. {p.name}[/bold]{aspects}")
        console.print(f"  critique:   {p.critique_request}", soft_wrap=True)
        console.print(f"  revision:   {p.revision_request}", soft_wrap=True)
        console.print(f"  comparison: {p.comparison_question}", soft_wrap=True)
    return 0


def _revise(args: argparse.Namespace) -> int:
    from rlhfkit.cai.revise import ReviseConfig, run_revise

    cfg = ReviseConfig(
        model=args.model, prompts=args.prompts, out=args.out, chains=args.chains, constitution=args.constitution,
        revisions=args.revisions, max_new_tokens=args.max_new_tokens, temperature=args.temperature, critique_temperature=args.critique_temperature,
        critic=args.critic, verifier=args.verifier, min_preference=args.min_preference,
        top_p=args.top_p, batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    result = run_revise(cfg)
    print(f"cai revise: {result['prompts']} prompts x {result['revisions']} revisions; {result['changed']} responses "
          f"changed ({result['rejected']} revisions rejected by the verifier); {result['chats']} SFT chats -> {args.out}; chains -> {result['chains_path']}")  # fmt: skip
    return 0


def _label(args: argparse.Namespace) -> int:
    from rlhfkit.cai.label import LabelConfig, run_label

    cfg = LabelConfig(
        labeler=args.labeler, candidates=args.candidates, out=args.out, constitution=args.constitution,
        principles_per_pair=args.principles_per_pair, max_pairs_per_prompt=args.max_pairs_per_prompt,
        batch_size=args.batch_size, api=args.api, votes=args.votes, seed=args.seed, categories=args.categories,
    )  # fmt: skip
    result = run_label(cfg)
    labels = [c["label"] for c in result["comparisons"]]
    methods = ", ".join(f"{k} {v}" for k, v in sorted(result["methods"].items()))
    print(f"cai label: {result['pairs']} pairs ({result['identical_skipped']} identical skipped), "
          f"{result['questions']} questions ({methods}), mean label {sum(labels) / len(labels):.3f}"
          + (f", {result['truncated']} truncated" if result["truncated"] else "") + f" -> {args.out}")  # fmt: skip
    return 0


def _world_data(args: argparse.Namespace) -> int:
    from rlhfkit.cai.world_data import WorldDataConfig, write_world_data

    cfg = WorldDataConfig(
        chains=args.chains, judgments=args.judgments, max_words=args.max_words, seed=args.seed
    )
    info = write_world_data(args.world, args.out, cfg, args.constitution)
    counts = info["counts"]
    print(f"cai world-data: {counts['critiques.jsonl']} critiques, {counts['revisions.jsonl']} revisions, "
          f"{counts['judgments.jsonl']} judgments ({info['critiques_naming_a_flaw']} critiques name a flaw) "
          f"-> {args.out}/cai_demos.jsonl")  # fmt: skip
    return 0


def _world_eval(args: argparse.Namespace) -> int:
    from rlhfkit.cai.world_eval import world_eval
    from rlhfkit.errors import RlhfkitError

    if not args.chains and not args.comparisons:
        raise RlhfkitError("cai world-eval: give --chains and/or --comparisons")
    result = world_eval(args.chains, args.comparisons, args.rlhf_comparisons)
    if args.chains:
        gains = result["revisions"]
        if gains["chains"]:
            parts = ", ".join(f"{k} {v['before']:+.2f}->{v['after']:+.2f}" for k, v in gains["parts"].items())
            print(f"revisions: gold {gains['gold_before']:.2f} -> {gains['gold_after']:.2f} over {gains['chains']} "
                  f"chains ({gains['improved']} better, {gains['worse']} worse); parts: {parts}")  # fmt: skip
        else:
            print("revisions: no chain carries demo-world meta")
    if args.comparisons:
        agreement = result["labels"]
        if agreement["pairs"]:
            print(f"AI labels: agree with the gold judge on {agreement['ai_agreement']:.1%} of {agreement['pairs']} "
                  f"pairs (simulated humans on the same pairs: {agreement['simulated_human_agreement']:.1%}); "
                  f"{agreement['gold_ties']} gold ties left out")  # fmt: skip
        else:
            print("AI labels: no pair carries demo-world meta with a gold preference")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0
