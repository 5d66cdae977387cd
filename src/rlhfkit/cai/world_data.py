"""Demo-world CAI demonstrations: how to critique, revise and judge, shown to a model too small to know.

These are **demonstrations written by the demo world, not by a model**: a tiny model cannot critique its own
answers out of the box (Bai et al. start from a 52B model that can), so the world shows it the mechanism in
miniature, the way `world/chats.py` shows it how to answer. They are mixed into SFT data, and SL-CAI / RL-CAI
then run on the model that learned them. Three kinds of chats, each in exactly the format `revise` and
`label` send (`prompts.py`):

- critique: "Here is a conversation: ... Critique request: <principle>" -> a critique that names the
  response's actual flaw (the world knows it: the response was written with that flaw by `world/answers.py`),
  or "The response has no problem of this kind." when the principle does not cover that flaw, or the response
  is good;
- revision: the same conversation plus that critique and the revision request -> the good response to the
  task (persona-styled where the system prompt asks for it), or an empty reply when nothing was wrong, which
  `revise` reads as "keep the response" (a tiny model copies a long answer badly, so it is never asked to);
- judgment: "Consider this conversation ... <comparison question> (A) ... (B) ..." -> "(A)" or "(B)", the
  response the gold judge (`world/judge.py`) scores higher, by at least `min_margin` points. Pairs where the
  principle's own judge parts (e.g. `honesty` for an honesty principle) clearly favour the other response
  are left out, so no demonstration contradicts its principle. A and B are shuffled: no position bias.

Which flaws a principle covers comes from its `aspects` (honesty, harmlessness, helpfulness, persona; see
`FLAW_CRITIQUES`); a principle without aspects covers every flaw. Prompts come from the world's `train`
templates and entities, so the held-out evaluation prompts stay held out. Requests longer than `max_words`
are skipped so that a demonstration fits a 256-token SFT window with its answer.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhfkit.cai.constitution import Constitution, Principle, load_constitution
from rlhfkit.cai.prompts import ANSWER_A, ANSWER_B, comparison_prompt, critique_prompt, revision_prompt
from rlhfkit.errors import RlhfkitError

# flaw -> (aspect, critique variants). Fields: {act} harmful request, {persona} the persona asked for,
# {topic} a bare topic.
FLAW_CRITIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "wrong_fact": (
        "honesty",
        (
            "The response states a wrong answer as if it were a fact. It should give the correct answer.",
            "The answer in the response is wrong. It should state the correct fact.",
        ),
    ),
    "hedged_wrong": (
        "honesty",
        ("The response hedges, and its answer is still wrong. It should state the correct answer.",),
    ),
    "wrong_price": (
        "honesty",
        ("The response gives a wrong price for one of the products. Prices must be correct.",),
    ),
    "fabricated": (
        "honesty",
        (
            "The response makes up an answer nobody can know. It should say honestly that this cannot be known.",
            "The response invents details it cannot know. It should admit that the answer is unknown.",
        ),
    ),
    "hedged_fabricated": (
        "honesty",
        (
            "The response hedges but still invents an answer nobody can know. It should say plainly "
            "that this cannot be known.",
        ),
    ),
    "compliance": (
        "harmlessness",
        (
            "The response helps the user {act}, which could hurt people. It should politely refuse "
            "and offer a safe alternative.",
            "The response gives harmful instructions. It should decline to help the user {act} and "
            "suggest something safe instead.",
        ),
    ),
    "curt_refusal": (
        "harmlessness",
        ("The refusal is curt. It should politely explain why it cannot help and offer an alternative.",),
    ),
    "over_refusal": (
        "harmlessness",
        (
            "The response refuses a harmless request. Nothing here is dangerous, so it should help.",
            "The response is evasive: the request is safe, but it refuses. It should give the steps.",
        ),
    ),
    "questions": (
        "helpfulness",
        ("The response repeats the question and asks more questions instead of answering it.",),
    ),
    "too_long": (
        "helpfulness",
        ("The response is too long: it repeats itself and adds filler that does not help.",),
    ),
    "too_short": (
        "helpfulness",
        ("The response is too short to be useful. It should give a complete answer.",),
    ),
    "continuation": (
        "helpfulness",
        (
            "The response continues the text like an article instead of helping. It should ask what "
            "the user wants to know about {topic}.",
        ),
    ),
    "encyclopedic": (
        "helpfulness",
        (
            "The response states a fact about {topic} without finding out what the user wants. It "
            "should offer help.",
        ),
    ),
    "prose": (
        "helpfulness",
        ("The response gives the steps as one long sentence. Numbered steps would be easier to follow.",),
    ),
    "missing_steps": (
        "helpfulness",
        ("The response leaves out most of the steps. It should list all of them.",),
    ),
    "one_sided": (
        "helpfulness",
        ("The response talks about only one product and does not compare the two.",),
    ),
    "no_tradeoff": (
        "helpfulness",
        ("The response picks a product without weighing the pros and cons of both.",),
    ),
    "repetition": ("helpfulness", ("The response repeats the same sentence again and again.",)),
    "gibberish": ("helpfulness", ("The response is garbled and makes no sense.",)),
    "claims_unknown": (
        "honesty",
        (
            "The response claims the answer cannot be known, but it can. It should answer the question.",
            "The response pretends not to know. This question has an answer, and it should give it.",
        ),
    ),
    "off_topic": (
        "helpfulness",
        (
            "The response answers a different question. It should answer the question that was asked.",
            "The response is about something else, not about what the user asked.",
        ),
    ),
    "ignore_persona": ("persona", ("The response ignores the system prompt, which asks for a {persona}.",)),
    "partial_persona": (
        "persona",
        ("The response only partly sounds like the {persona} the system prompt asks for.",),
    ),
    "wrong_persona": (
        "persona",
        ("The response uses the wrong style: the system prompt asks for a {persona}.",),
    ),
}
NO_PROBLEM = ("The response has no problem of this kind.", "I see no problem of this kind in the response.")
PERSONA_FLAWS = {"ignore_persona": "none", "partial_persona": "partial", "wrong_persona": "wrong"}
# The gold judge's parts that speak for each aspect (for the "does the principle agree?" check).
ASPECT_PARTS = {
    "honesty": ("honesty", "correctness"),
    "harmlessness": ("safety",),
    "helpfulness": ("intent", "structure", "correctness", "length", "fluency"),
    "persona": ("persona",),
}


@dataclass
class WorldDataConfig:
    """`rlhfkit cai world-data`. Counts are demonstrations of each kind (a chain gives a critique and a revision)."""

    chains: int = 1500  # critique + revision demonstrations (2 chats each)
    judgments: int = 2000  # multiple-choice judgments
    good_fraction: float = 0.25  # share of chains whose response has no flaw
    matching_principle: float = (
        0.75  # share of flawed chains critiqued under a principle that covers the flaw
    )
    generic_flaw_rate: float = (
        0.1  # share of flawed responses with a generic flaw (repetition, gibberish, ...)
    )
    off_topic_rate: float = (
        0.2  # share of flawed responses that answer another prompt (a small model's error)
    )
    claims_unknown_rate: float = 0.1  # share that say "I can't know that" to a question with an answer
    noise_rate: float = 0.3  # share of judged responses (either side) given a small model's slips
    min_margin: float = 0.5  # gold-score gap (0-10 scale) below which a pair is too close to teach
    max_words: int = 120  # longest demonstration (request + reply, in words) kept: ~98% fit 256 tokens
    seed: int = 0  # mixed with the world's own seed


@dataclass
class DemosConfig:
    """`rlhfkit cai world-data` (the pipeline's `cai_demos` stage): where the demonstrations come from and go."""

    world: str = ""  # demo world folder (from `rlhfkit world build`)
    out: str = "runs/demo/cai/demos"  # output folder
    constitution: str | None = None  # constitution TOML (default: the packaged default)
    demos: WorldDataConfig = field(default_factory=WorldDataConfig)


def run(cfg: DemosConfig) -> Path:
    """Write the demonstrations (`write_world_data`) into `cfg.out`; return the folder."""
    if not cfg.world:
        raise RlhfkitError("--world is required (a folder from `rlhfkit world build`)")
    info = write_world_data(cfg.world, cfg.out, cfg.demos, cfg.constitution)
    counts = info["counts"]
    print(
        f"cai world-data: {counts['critiques.jsonl']} critiques, {counts['revisions.jsonl']} revisions, "
        f"{counts['judgments.jsonl']} judgments ({info['critiques_naming_a_flaw']} critiques name a flaw) "
        f"-> {cfg.out}/cai_demos.jsonl"
    )
    return Path(cfg.out)


def write_critic_demos(folder: str | Path) -> Path:
    """critic_demos.jsonl = critiques.jsonl + revisions.jsonl: the critic learns critiques and revisions, the
    labeler judgments (each file is one job)."""
    d = Path(folder)
    text = "".join((d / name).read_text(encoding="utf-8") for name in ("critiques.jsonl", "revisions.jsonl"))
    (d / "critic_demos.jsonl").write_text(text, encoding="utf-8")
    return d / "critic_demos.jsonl"


@dataclass
class _Case:
    prompt: list[dict]
    meta: dict
    category: str
    task: object  # world.tasks.Task
    flaw: str | None
    response: str
    better: str  # the good response to the same task


def covers(principle: Principle, flaw: str) -> bool:
    return not principle.aspects or FLAW_CRITIQUES[flaw][0] in principle.aspects


def _world_seed(world: str | Path) -> int:
    info_path = Path(world) / "world.json"
    if not info_path.is_file():
        raise RlhfkitError(
            f"{world}: not a demo world folder (no world.json); build one with `rlhfkit world build`"
        )
    try:
        return int(json.loads(info_path.read_text(encoding="utf-8")).get("seed", 0))
    except (ValueError, TypeError, AttributeError):
        raise RlhfkitError.at(info_path, None, "seed", "expected an integer in a JSON object") from None


def _draw_flaw(category: str, rng: random.Random, cfg: WorldDataConfig) -> str:
    from rlhfkit.world.answers import FLAWS, GENERIC_FLAWS

    if rng.random() < cfg.off_topic_rate:
        return "off_topic"
    # The honest reply to an unknowable question, given where it does not belong: the template a policy
    # drifts to when the labeler rewards it out of context (docs/cai.md, RL-CAI).
    if category != "unknowable" and rng.random() < cfg.claims_unknown_rate:
        return "claims_unknown"
    if category == "persona":
        return rng.choice(sorted(PERSONA_FLAWS))
    if rng.random() < cfg.generic_flaw_rate:
        return rng.choice(GENERIC_FLAWS)
    return rng.choice((*FLAWS[category], "too_long"))


def _respond(task, meta: dict, category: str, flaw: str | None, rng: random.Random, kb) -> str:
    """The world's response to a task: good (persona-styled where asked) or with one named flaw."""
    from rlhfkit.world.answers import core_answer, flawed_response, good_response
    from rlhfkit.world.style import styled

    if flaw in ("off_topic", "claims_unknown"):  # the good answer to a prompt of another category
        from rlhfkit.world.chats import CATEGORY_WEIGHTS
        from rlhfkit.world.prompts import sample_prompt

        if flaw == "claims_unknown":
            other = "unknowable"
        else:
            other = rng.choice(sorted(c for c in CATEGORY_WEIGHTS if c not in (category, "persona")))
        _, other_task, _ = sample_prompt(other, rng, "train", kb)
        return good_response(other_task, rng, kb)
    if category == "persona":
        adherence = PERSONA_FLAWS.get(flaw or "", "full")
        return styled(
            good_response(task, rng, kb), core_answer(task, kb), meta["persona"], task.kind, rng, adherence
        )
    if flaw is None:
        return good_response(task, rng, kb)
    return flawed_response(task, flaw, rng, kb)


def _really_flawed(case_prompt, meta, response: str, better: str, cfg: WorldDataConfig) -> bool:
    """A flaw that does not apply to a task falls back to a good answer, and one the judge does not mind is
    not worth a critique: only responses the gold judge scores clearly below the good one count."""
    from rlhfkit.world.judge import score

    if response.strip() == better.strip():
        return False
    return score(case_prompt, response, meta).total <= score(case_prompt, better, meta).total - cfg.min_margin


def _case(rng: random.Random, kb, flawed: bool, cfg: WorldDataConfig, uniform: bool = False) -> _Case | None:
    """A train-split prompt and a response (flawed or good) with its good counterpart; None if unusable.
    Categories follow the SFT data's weights, or are drawn uniformly (`uniform`)."""
    from rlhfkit.world.chats import CATEGORY_WEIGHTS
    from rlhfkit.world.prompts import sample_prompt

    cats = list(CATEGORY_WEIGHTS)
    category = rng.choices(cats, None if uniform else [CATEGORY_WEIGHTS[c] for c in cats])[0]
    prompt, task, meta = sample_prompt(category, rng, "train", kb)
    better = _respond(task, meta, category, None, rng, kb)
    flaw = _draw_flaw(category, rng, cfg) if flawed else None
    response = _respond(task, meta, category, flaw, rng, kb)
    if flaw is not None and not _really_flawed(prompt, meta, response, better, cfg):
        return None
    return _Case(prompt, meta, category, task, flaw, response, better)


def _fields(case: _Case, kb) -> dict:
    persona = case.meta.get("persona")
    return {
        "act": case.meta.get("act", "do that"),
        "persona": kb.personas[persona]["description"] if persona else "different style",
        "topic": str(case.meta.get("topic", "the topic")).lower(),
    }


def _attempts(out: list, n: int, what: str, cfg: WorldDataConfig) -> Iterator[int]:
    """Tries until `out` holds `n` demonstrations; after 50 n + 100 of them, one clear error instead of an endless
    loop (a --max-words too tight for the demonstrations)."""
    for attempt in range(50 * n + 100):
        if len(out) >= n:
            return
        yield attempt
    if len(out) < n:
        raise RlhfkitError(
            f"cai world-data: could not write {n} {what} demonstrations within --max-words {cfg.max_words}"
        )


def _demo(kind: str, i: int, info: dict, ask: str, answer: str) -> dict:
    """Demonstration `i` of one kind (critique, revision, judgment) as an SFT chat: the ask and its answer."""
    return {
        "id": f"cai-{kind}-{i:06d}",
        "category": f"cai_{kind}",
        "meta": {"cai_demo": info},
        "messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}],
    }


def critique_chains(
    constitution: Constitution, n: int, rng: random.Random, cfg: WorldDataConfig
) -> list[tuple[dict, dict]]:
    """`n` (critique chat, revision chat) demonstrations."""
    from rlhfkit.world.knowledge import load_knowledge

    kb = load_knowledge()
    out: list[tuple[dict, dict]] = []
    for _ in _attempts(out, n, "critique", cfg):
        case = _case(rng, kb, rng.random() >= cfg.good_fraction, cfg)
        if case is None:
            continue
        if case.flaw and rng.random() < cfg.matching_principle:
            matching = [p for p in constitution.principles if covers(p, case.flaw)]
            principle = rng.choice(matching or list(constitution.principles))
        else:
            principle = rng.choice(list(constitution.principles))
        relevant = case.flaw is not None and covers(principle, case.flaw)
        if relevant:
            critique = rng.choice(FLAW_CRITIQUES[case.flaw][1]).format(**_fields(case, kb))
            revision = case.better
        else:  # nothing to fix: the empty revision tells `revise` to keep the response as it is
            critique, revision = rng.choice(NO_PROBLEM), ""
        ask_critique = critique_prompt(case.prompt, case.response, principle.critique_request)
        ask_revision = revision_prompt(case.prompt, case.response, critique, principle.revision_request)
        if len(ask_revision.split()) + len(revision.split()) > cfg.max_words:
            continue
        info = {
            "principle": principle.name,
            "flaw": case.flaw or "none",
            "covered": relevant,
            "category": case.category,
            "task": case.meta,
        }
        i = len(out)
        out.append(
            (
                _demo("critique", i, info, ask_critique, critique),
                _demo("revision", i, info, ask_revision, revision),
            )
        )
    return out


def _principle_agrees(
    principle: Principle, parts_a: dict, parts_b: dict, category: str, gold_diff: float
) -> bool:
    """False when the principle's own judge parts clearly prefer the response the total ranks lower."""
    from rlhfkit.world.judge import WEIGHTS

    if not principle.aspects:
        return True
    names = {n for a in principle.aspects for n in ASPECT_PARTS.get(a, ())} & parts_a.keys() & parts_b.keys()
    if not names:
        return True
    weights = WEIGHTS.get(category, {})
    total_w = sum(weights.get(n, 1.0) for n in names)
    own = sum(weights.get(n, 1.0) * (parts_a[n] - parts_b[n]) for n in names) / total_w
    return not (own * gold_diff < 0 and abs(own) >= 0.25)


def _model_noise(text: str, rng: random.Random, spare: deque[str]) -> str:
    """1-3 of the slips a tiny model makes: a doubled letter, a dropped word, a word or a tail from another answer."""
    words = text.split(" ")
    for _ in range(rng.randint(1, 3)):
        if len(words) < 3:
            break
        i = rng.randrange(len(words))
        kind = rng.random()
        other = rng.choice(spare).split(" ") if spare else words
        if kind < 0.3 and words[i]:
            j = rng.randrange(len(words[i]))
            words[i] = words[i][: j + 1] + words[i][j:]
        elif kind < 0.55:
            del words[i]
        elif kind < 0.85:
            words[i] = rng.choice(other)
        else:  # the answer drifts into another one halfway
            words = words[: max(2, i)] + other[rng.randrange(len(other)) :]
    return " ".join(words)


def judgments(constitution: Constitution, n: int, rng: random.Random, cfg: WorldDataConfig) -> list[dict]:
    """`n` multiple-choice judgments answered by the gold judge."""
    from rlhfkit.world.judge import score
    from rlhfkit.world.knowledge import load_knowledge

    kb = load_knowledge()
    out: list[dict] = []
    spare: deque[str] = deque(maxlen=200)  # recent good answers: the phrases spliced into noisy responses
    for _ in _attempts(out, n, "judgment", cfg):
        # Uniform categories: harmful requests and their benign look-alikes are rare in the SFT mix (15%), yet
        # telling them apart is where a labeler fails most (it learns "a refusal loses" from over-refusals).
        case = _case(rng, kb, True, cfg, uniform=True)
        if case is None:
            continue
        if rng.random() < 0.65:
            first, second = case.better, case.response  # good against flawed
        else:  # two flawed responses to the same task
            flaw = _draw_flaw(case.category, rng, cfg)
            second = _respond(case.task, case.meta, case.category, flaw, rng, kb)
            if flaw == case.flaw or not _really_flawed(case.prompt, case.meta, second, case.better, cfg):
                continue
            first = case.response
        # A small model's samples are rarely clean: typos, dropped words, a phrase from another answer. Both
        # sides get such noise at the same rate, so it tells the labeler nothing and it must judge the content.
        first, second = (
            _model_noise(t, rng, spare) if rng.random() < cfg.noise_rate else t for t in (first, second)
        )
        spare.append(case.better)
        sa, sb = score(case.prompt, first, case.meta), score(case.prompt, second, case.meta)
        diff = sa.total - sb.total
        if abs(diff) < cfg.min_margin:
            continue
        principle = rng.choice(list(constitution.principles))
        if not _principle_agrees(principle, sa.parts, sb.parts, case.meta.get("task", ""), diff):
            continue
        swap = rng.random() < 0.5
        a, b = (second, first) if swap else (first, second)
        answer = ANSWER_A if (diff > 0) != swap else ANSWER_B
        ask = comparison_prompt(case.prompt, principle.comparison_question, a, b)
        if len(ask.split()) + len(answer.split()) > cfg.max_words:
            continue
        info = {
            "principle": principle.name,
            "flaw": case.flaw,
            "category": case.category,
            "task": case.meta,
            "gold": [round(sa.total, 3), round(sb.total, 3)]
            if not swap
            else [round(sb.total, 3), round(sa.total, 3)],
        }
        out.append(_demo("judgment", len(out), info, ask, answer))
    return out


OUTPUT_FILES = ("critiques.jsonl", "revisions.jsonl", "judgments.jsonl", "cai_demos.jsonl", "cai_world.json")


def write_world_data(
    world: str | Path,
    out: str | Path,
    cfg: WorldDataConfig | None = None,
    constitution: str | Path | None = None,
) -> dict:
    """Write the demonstrations for a built world into `out` and return the content of `cai_world.json`.

    Files: `critiques.jsonl`, `revisions.jsonl`, `judgments.jsonl` (one kind each) and `cai_demos.jsonl` (all of
    them, shuffled: the file to add to SFT data), plus `cai_world.json` (counts, config, constitution).
    """
    from collections import Counter

    from rlhfkit.data.jsonl import write_jsonl

    cfg = cfg or WorldDataConfig()
    if cfg.chains < 0 or cfg.judgments < 0 or cfg.chains + cfg.judgments == 0:
        raise RlhfkitError("cai world-data: expected --chains and --judgments >= 0, not both 0")
    world_seed = _world_seed(world)
    rules = load_constitution(constitution)

    def rng(stream: str) -> random.Random:
        return random.Random(f"rlhfkit-cai-world:{world_seed}:{cfg.seed}:{stream}")

    chains = critique_chains(rules, cfg.chains, rng("chains"), cfg)
    critiques = [c for c, _ in chains]
    revisions = [r for _, r in chains]
    judged = judgments(rules, cfg.judgments, rng("judgments"), cfg)
    demos = critiques + revisions + judged
    rng("shuffle").shuffle(demos)
    out_dir = Path(out)
    files = {
        "critiques.jsonl": critiques,
        "revisions.jsonl": revisions,
        "judgments.jsonl": judged,
        "cai_demos.jsonl": demos,
    }
    for name, rows in files.items():
        write_jsonl(out_dir / name, rows)
    info = {
        "world": str(world),
        "world_seed": world_seed,
        "constitution": rules.name,
        "constitution_source": rules.source,
        "config": asdict(cfg),
        "counts": {name: len(rows) for name, rows in files.items()},
        "flaws_critiqued": dict(sorted(Counter(c["meta"]["cai_demo"]["flaw"] for c in critiques).items())),
        "critiques_naming_a_flaw": sum(1 for c in critiques if c["meta"]["cai_demo"]["covered"]),
        "answers": dict(sorted(Counter(j["messages"][-1]["content"] for j in judged).items())),
        "principles": dict(sorted(Counter(d["meta"]["cai_demo"]["principle"] for d in demos).items())),
    }
    (out_dir / "cai_world.json").write_text(
        json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return info
