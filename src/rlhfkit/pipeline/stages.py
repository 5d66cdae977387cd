"""The pipeline's stage table: every stage the pipeline runs, in order, and what it reads and writes.

A stage is a config dataclass and the `run(config) -> Path` next to it in its package (`module`); the table
says which command runs it by hand, which folder it writes (`output`, relative to the run folder), which
stages it reads (`depends`) and the config fields that name files in the run folder (`paths`: its inputs and
its output). Every other option comes from the stage's table in `defaults.toml` (`defaults.py`). A few stages
arrange files for the next one afterwards (`after`); the code that does it lives in the package that owns the
data, and each of these hooks only names the files. (`before` does the same ahead of a stage: online's rounds
write their prompts and gather their labels with it.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlhfkit.errors import RlhfkitError


@dataclass(frozen=True)
class Stage:
    name: str  # the stage's name: --only/--from/--until, its [table] in a pipeline config, pipeline.json
    summary: str
    command: str  # the `rlhfkit` command that runs it by hand, e.g. "reward train"
    module: str  # the module holding its config class and `run(config)`
    config: str  # the config class's name in `module`
    output: str  # what it writes, relative to the run folder: the folder of its name (`cai_x`: cai/x/)
    depends: tuple[str, ...]  # the stages whose outputs it reads
    paths: Callable[[Path], dict] = field(repr=False)  # run folder -> {config field: file}, in flag order
    after: Callable[[Path], None] | None = field(default=None, repr=False)  # post-stage step (see above)
    estimate_s: float = 60.0  # default-config duration on a 2-core CPU, for the ETA before a first run
    before: Callable[[Path], None] | None = field(default=None, repr=False)  # writes or checks its inputs

    def folder(self, run_dir: Path) -> Path:
        """Where it writes in `run_dir` (under the old folder name in a run made before the rename)."""
        return run_path(run_dir, self.output)


def _p(path: Path) -> str:
    return str(path)


# Each stage writes the folder of its own name. Runs made before that rename used these names; such a run still
# resumes (its stages' keys are unchanged, so nothing reruns) and reports, because `run_path` reads a folder
# under its old name wherever the new one is absent and the old one is there.
OLD_FOLDERS = {
    "pretrain": "base",
    "labels": "comparisons",
    "reward": "rm",
    "evaluate": "eval",
    "cai/labels": "cai/comparisons",
    "cai/reward": "cai/rm",
    "cai/evaluate": "cai/eval",
    "cai/revise": "cai/revisions",
    "cai/hybrid/reward": "cai/hybrid/rm",
}


def run_path(run_dir: Path, relative: str | Path) -> Path:
    """`run_dir / relative`, with its stage folder under the old name (`OLD_FOLDERS`) in a run made before the
    rename: only where the new folder is absent and the old one exists."""
    relative = Path(relative).as_posix()
    for new in sorted(OLD_FOLDERS, key=len, reverse=True):  # cai/hybrid/reward before cai/...
        if relative == new or relative.startswith(new + "/"):
            old = OLD_FOLDERS[new] + relative[len(new) :]
            if not (run_dir / new).exists() and (run_dir / OLD_FOLDERS[new]).exists():
                return run_dir / old
            break
    return run_dir / relative


# ---- paths: which files each stage reads and writes --------------------------------------------------------


def _sft_paths(model: Path, data: Path, val: Path | None, out: Path) -> Callable[[Path], dict]:
    return lambda r: {
        "model": _p(run_path(r, model)),
        "data": _p(run_path(r, data)),
        **({"val_data": _p(run_path(r, val))} if val else {}),
        "out": _p(run_path(r, out)),
    }


def _candidates_paths(model: str, out: str) -> Callable[[Path], dict]:
    return lambda r: {
        "model": _p(run_path(r, model)),
        "prompts": _p(run_path(r, "world/prompts.jsonl")),
        "out": _p(run_path(r, out) / "candidates.jsonl"),
    }


def _reward_paths(model: str, comparisons: str, candidates: str, out: str) -> Callable[[Path], dict]:
    return lambda r: {
        "model": _p(run_path(r, model)),
        "data": _p(run_path(r, comparisons) / "train.jsonl"),
        "eval_data": _p(run_path(r, comparisons) / "eval.jsonl"),
        "calibration": _p(run_path(r, candidates) / "candidates.jsonl"),
        "out": _p(run_path(r, out)),
    }


def _policy_paths(policy: str, reward: str, out: str) -> Callable[[Path], dict]:
    return lambda r: {
        "policy": _p(run_path(r, policy)),
        "reward": _p(run_path(r, reward)),
        "prompts": _p(run_path(r, "world/prompts.jsonl")),
        "out": _p(run_path(r, out)),
    }


# The evaluation also answers with the pipeline's aligned model as best-of-8 by the run's reward model, the
# system `rlhfkit serve --best-of 8 --reranker RUN/reward` runs: distilling the reward model's picks into the
# 1.3M-parameter policy keeps only part of their gain (docs/methods.md, "Best-of-n at inference").
ALIGNED_BEST_OF = 8


def _evaluate_paths(
    models: Callable[[Path], list[tuple[str, Path]]], out: str, best_of_model: str | None = None
) -> Callable[[Path], dict]:
    """`evaluate`'s files; `best_of_model`, when finished and the run has its reward model, is listed a second
    time as `<name>-bo8`, answering as best-of-8 by that reward model."""

    def paths(r: Path) -> dict:
        found = dict(models(r))
        options = {
            "prompts": _p(run_path(r, "world/eval_prompts.jsonl")),
            "judge": "gold",
            "out": _p(run_path(r, out)),
            "models": {name: _p(path) for name, path in found.items()},
        }
        reranker = run_path(r, "reward")
        if best_of_model in found and (reranker / "config.json").exists():
            name = f"{best_of_model}-bo{ALIGNED_BEST_OF}"
            options["models"][name] = _p(found[best_of_model])
            options["best_of"] = [f"{name}={ALIGNED_BEST_OF}"]
            options["reranker"] = _p(reranker)
        return options

    return paths


def _finished_models(names: tuple[str, ...]) -> Callable[[Path], list[tuple[str, Path]]]:
    """The models among `names` (each its stage's folder; `base`, the pretrained model, is in `pretrain/`) whose
    folders hold a checkpoint."""

    def folders(r: Path) -> list[tuple[str, Path]]:
        return [(n, run_path(r, "pretrain" if n == "base" else n)) for n in names]

    return lambda r: [(n, f) for n, f in folders(r) if (f / "config.json").exists()]


# ---- after: post-stage steps, each owned by the package of its data ---------------------------------------


def _split_labels(r: Path) -> None:
    """Hold out 10% of the prompt items (all their lines) for measuring the reward model (`rlhfkit data split`)."""
    from rlhfkit.data.comparisons import write_split

    write_split(run_path(r, "labels/all.jsonl"), run_path(r, "labels"))


def _split_cai_labels(r: Path) -> None:
    from rlhfkit.data.comparisons import write_split

    write_split(run_path(r, "cai/labels/all.jsonl"), run_path(r, "cai/labels"))


def _critic_demos(r: Path) -> None:
    from rlhfkit.cai.world_data import write_critic_demos

    write_critic_demos(run_path(r, "cai/demos"))


def _unrevised(r: Path) -> None:
    from rlhfkit.cai.revise import write_unrevised

    write_unrevised(run_path(r, "cai/revise"))


def _hybrid_split(r: Path) -> None:
    from rlhfkit.cai.hybrid import write_hybrid_split

    write_hybrid_split(run_path(r, "labels"), run_path(r, "cai/hybrid"))


def _cai_world_eval(r: Path) -> None:
    """`rlhfkit cai world-eval` on the CAI branch's chains and labels -> cai/evaluate/world_eval.json."""
    from rlhfkit.cai.world_eval import write_world_eval

    rlhf = run_path(r, "labels/all.jsonl")
    write_world_eval(
        run_path(r, "cai/revise/revisions.chains.jsonl"),
        run_path(r, "cai/labels/all.jsonl"),
        rlhf if rlhf.exists() else None,
        run_path(r, "cai/evaluate/world_eval.json"),
    )


# ---- the tables -----------------------------------------------------------------------------------------

SFT = ("sft", "rlhfkit.train.sft", "SFTConfig")
PPO = ("ppo", "rlhfkit.ppo.trainer", "PPOConfig")
EVALUATE = ("evaluate", "rlhfkit.evaluate.run", "EvalConfig")

STAGES: list[Stage] = [
    Stage(
        "world",
        "build the demo world (corpus, demonstrations, prompts, gold judge)",
        "world build",
        "rlhfkit.world.build",
        "WorldConfig",
        "world",
        (),
        lambda r: {"out": _p(run_path(r, "world"))},
        estimate_s=3,
    ),
    Stage(
        "tokenizer",
        "train a byte-level BPE tokenizer on the corpus",
        "tokenizer train",
        "rlhfkit.tokenizer",
        "TokenizerConfig",
        "tokenizer",
        ("world",),
        lambda r: {"data": _p(run_path(r, "world/corpus.jsonl")), "out": _p(run_path(r, "tokenizer"))},
        estimate_s=10,
    ),
    Stage(
        "pretrain",
        "Stage 1: pretrain a base model (a text completer)",
        "pretrain",
        "rlhfkit.train.pretrain",
        "PretrainConfig",
        "pretrain",
        ("tokenizer",),
        lambda r: {
            "data": _p(run_path(r, "world/corpus.jsonl")),
            "tokenizer": _p(run_path(r, "tokenizer")),
            "out": _p(run_path(r, "pretrain")),
        },
        estimate_s=300,
    ),
    Stage(
        "sft",
        "Stage 2: supervised fine-tuning on demonstrations",
        *SFT,
        "sft",
        ("pretrain",),
        _sft_paths(Path("pretrain"), Path("world/sft.jsonl"), Path("world/sft_val.jsonl"), Path("sft")),
        estimate_s=300,
    ),
    Stage(
        "candidates",
        "sample K responses per prompt from the SFT model",
        "generate",
        "rlhfkit.generation.candidates",
        "CandidatesConfig",
        "candidates",
        ("sft",),
        _candidates_paths("sft", "candidates"),
        estimate_s=120,
    ),
    Stage(
        "labels",
        "simulated annotators rank the candidates",
        "label",
        "rlhfkit.world.labels",
        "LabelsConfig",
        "labels",
        ("candidates",),
        lambda r: {
            "candidates": _p(run_path(r, "candidates/candidates.jsonl")),
            "out": _p(run_path(r, "labels/all.jsonl")),
            "agreement_out": _p(run_path(r, "labels/agreement.json")),
        },
        after=_split_labels,
        estimate_s=10,
    ),
    Stage(
        "reward",
        "Stage 3b: train the reward model (Bradley-Terry)",
        "reward train",
        "rlhfkit.reward.train",
        "RewardConfig",
        "reward",
        ("labels",),
        _reward_paths("sft", "labels", "candidates", "reward"),
        estimate_s=200,
    ),
    Stage(
        "ppo",
        "Stage 3c: PPO against the reward model with a KL leash",
        *PPO,
        "ppo",
        ("reward",),
        _policy_paths("sft", "reward", "ppo"),
        estimate_s=400,
    ),
    Stage(
        "evaluate",
        "win rates, probes and samples judged by the gold judge",
        *EVALUATE,
        "evaluate",
        ("ppo",),
        _evaluate_paths(_finished_models(("base", "sft", "ppo")), "evaluate", best_of_model="ppo"),
        estimate_s=180,
    ),
    Stage(
        "report",
        "write report.html",
        "report",
        "rlhfkit.evaluate.report",
        "ReportConfig",
        "report.html",
        ("evaluate",),
        lambda r: {"run": _p(r)},
        estimate_s=10,
    ),
]
STAGE_NAMES = [s.name for s in STAGES]


# The policy-optimization methods `--method` chooses from; each writes its policy to <run>/<method>/.
# All start from the same SFT model; all but dpo read the reward model, dpo reads the comparisons directly.
METHOD_STAGES: list[Stage] = [
    STAGES[STAGE_NAMES.index("ppo")],
    Stage(
        "dpo",
        "Stage 3c: DPO straight from the comparisons (no reward model, no rollouts)",
        "dpo",
        "rlhfkit.dpo.trainer",
        "DPOConfig",
        "dpo",
        ("labels",),
        lambda r: {
            "policy": _p(run_path(r, "sft")),
            "data": _p(run_path(r, "labels/train.jsonl")),
            "eval_data": _p(run_path(r, "labels/eval.jsonl")),
            "out": _p(run_path(r, "dpo")),
        },
        estimate_s=300,
    ),
    Stage(
        "rloo",
        "Stage 3c: RLOO, critic-free RL against the reward model",
        "rloo",
        "rlhfkit.ppo.trainer",
        "RLOOConfig",
        "rloo",
        ("reward",),
        _policy_paths("sft", "reward", "rloo"),
        estimate_s=300,
    ),
    Stage(
        "grpo",
        "Stage 3c: GRPO, group-normalized critic-free RL",
        "grpo",
        "rlhfkit.ppo.trainer",
        "GRPOConfig",
        "grpo",
        ("reward",),
        _policy_paths("sft", "reward", "grpo"),
        estimate_s=300,
    ),
    Stage(
        "rs",
        "Stage 3c: rejection sampling, fine-tuning on the RM's best of n",
        "rs",
        "rlhfkit.rs.trainer",
        "RSConfig",
        "rs",
        ("reward",),
        _policy_paths("sft", "reward", "rs"),
        estimate_s=200,
    ),
    # ranks its own samples round by round: the same label budget, spent online
    Stage(
        "online",
        "Stage 3: online iterated RLHF, rounds of labels on the current policy's samples",
        "online",
        "rlhfkit.online.trainer",
        "OnlineConfig",
        "online",
        ("sft",),
        lambda r: {
            "policy": _p(run_path(r, "sft")),
            "prompts": _p(run_path(r, "world/prompts.jsonl")),
            "out": _p(run_path(r, "online")),
        },
        estimate_s=600,
    ),
    Stage(
        "hybrid",
        "Stage 3c: PPO against the hybrid RM (human helpfulness, AI harmlessness)",
        *PPO,
        "hybrid",
        ("hybrid_reward",),
        _policy_paths("sft", "cai/hybrid/reward", "hybrid"),
        estimate_s=400,
    ),
]
METHODS = tuple(s.name for s in METHOD_STAGES)


# Human labels for helpfulness, AI labels for harmlessness (Bai et al. 2022, "Constitutional AI", section 4):
# the CAI labeler compares the same candidates on the harmful and benign-look-alike prompts only, and the
# reward model trains on those AI labels plus the people's rankings of every other prompt.
def _hybrid_label_paths(r: Path) -> dict:
    from rlhfkit.cai.hybrid import HARMLESSNESS_CATEGORIES

    return {
        "labeler": _p(run_path(r, "cai/labeler")),
        "candidates": _p(run_path(r, "candidates/candidates.jsonl")),
        "categories": list(HARMLESSNESS_CATEGORIES),
        "out": _p(run_path(r, "cai/hybrid/ai.jsonl")),
    }


CAI_LABEL = ("cai label", "rlhfkit.cai.label", "LabelConfig")
HYBRID_STAGES = [
    Stage(
        "hybrid_labels",
        "AI labels for the harmlessness prompts (CAI labeler), merged with human labels",
        *CAI_LABEL,
        "cai/hybrid",
        ("labels", "cai_labeler"),
        _hybrid_label_paths,
        after=_hybrid_split,
        estimate_s=200,
    ),
    Stage(
        "hybrid_reward",
        "reward model on human helpfulness + AI harmlessness labels",
        "reward train",
        "rlhfkit.reward.train",
        "RewardConfig",
        "cai/hybrid/reward",
        ("hybrid_labels",),
        _reward_paths("sft", "cai/hybrid", "candidates", "cai/hybrid/reward"),
        estimate_s=200,
    ),
]


# Constitutional AI variant (`--cai`): principles and AI feedback replace the human comparisons. It starts
# from the same SFT model as the RLHF branch, so "does CAI beat SFT" compares against the very same model.
CAI_STAGES: list[Stage] = STAGES[:4] + [
    Stage(
        "cai_demos",
        "demo-world demonstrations of critiques, revisions and judgments",
        "cai world-data",
        "rlhfkit.cai.world_data",
        "DemosConfig",
        "cai/demos",
        ("world",),
        lambda r: {"world": _p(run_path(r, "world")), "out": _p(run_path(r, "cai/demos"))},
        after=_critic_demos,
        estimate_s=20,
    ),
    Stage(
        "cai_critic",
        "the critic: SFT on critiques and revisions",
        *SFT,
        "cai/critic",
        ("sft", "cai_demos"),
        _sft_paths(Path("sft"), Path("cai/demos/critic_demos.jsonl"), None, Path("cai/critic")),
        estimate_s=400,
    ),
    Stage(
        "cai_labeler",
        "the labeler: SFT on multiple-choice judgments",
        *SFT,
        "cai/labeler",
        ("sft", "cai_demos"),
        _sft_paths(Path("sft"), Path("cai/demos/judgments.jsonl"), None, Path("cai/labeler")),
        estimate_s=450,
    ),
    # The policy writes the first answer; the critic critiques and revises it; the labeler checks each revision.
    Stage(
        "cai_revise",
        "SL-CAI: the critic critiques and revises the SFT model's answers; the labeler checks each revision",
        "cai revise",
        "rlhfkit.cai.revise",
        "ReviseConfig",
        "cai/revise",
        ("cai_critic", "cai_labeler"),
        lambda r: {
            "model": _p(run_path(r, "sft")),
            "prompts": _p(run_path(r, "world/prompts.jsonl")),
            "critic": _p(run_path(r, "cai/critic")),
            "verifier": _p(run_path(r, "cai/labeler")),
            "out": _p(run_path(r, "cai/revise/revisions.jsonl")),
        },
        after=_unrevised,
        estimate_s=120,
    ),
    Stage(
        "sl_cai",
        "SFT on the final revisions",
        *SFT,
        "cai/sl_cai",
        ("cai_revise",),
        _sft_paths(
            Path("sft"),
            Path("cai/revise/revisions.jsonl"),
            Path("world/sft_val.jsonl"),
            Path("cai/sl_cai"),
        ),
        estimate_s=20,
    ),
    Stage(
        "cai_control",
        "control: SFT on the same answers unrevised",
        *SFT,
        "cai/control",
        ("cai_revise",),
        _sft_paths(
            Path("sft"),
            Path("cai/revise/unrevised.jsonl"),
            Path("world/sft_val.jsonl"),
            Path("cai/control"),
        ),
        estimate_s=20,
    ),
    Stage(
        "cai_candidates",
        "sample K responses per prompt from the SL-CAI model",
        "generate",
        "rlhfkit.generation.candidates",
        "CandidatesConfig",
        "cai/candidates",
        ("sl_cai",),
        _candidates_paths("cai/sl_cai", "cai/candidates"),
        estimate_s=120,
    ),
    Stage(
        "cai_labels",
        "RL-CAI: the AI labeler compares pairs under sampled principles (soft labels)",
        *CAI_LABEL,
        "cai/labels",
        ("cai_candidates", "cai_labeler"),
        lambda r: {
            "labeler": _p(run_path(r, "cai/labeler")),
            "candidates": _p(run_path(r, "cai/candidates/candidates.jsonl")),
            "out": _p(run_path(r, "cai/labels/all.jsonl")),
        },
        after=_split_cai_labels,
        estimate_s=200,
    ),
    Stage(
        "cai_reward",
        "reward model on AI labels",
        "reward train",
        "rlhfkit.reward.train",
        "RewardConfig",
        "cai/reward",
        ("cai_labels",),
        _reward_paths("cai/sl_cai", "cai/labels", "cai/candidates", "cai/reward"),
        estimate_s=200,
    ),
    Stage(
        "cai_ppo",
        "PPO against the AI-feedback reward model",
        *PPO,
        "cai/ppo",
        ("cai_reward",),
        _policy_paths("cai/sl_cai", "cai/reward", "cai/ppo"),
        estimate_s=400,
    ),
    Stage(
        "cai_evaluate",
        "SFT vs the unrevised control vs SL-CAI vs RL-CAI, judged by the gold judge",
        *EVALUATE,
        "cai/evaluate",
        ("cai_ppo", "cai_control"),
        _evaluate_paths(
            lambda r: [
                ("sft", run_path(r, "sft")),
                ("self_distilled", run_path(r, "cai/control")),
                ("sl_cai", run_path(r, "cai/sl_cai")),
                ("cai_ppo", run_path(r, "cai/ppo")),
            ],
            "cai/evaluate",
        ),
        after=_cai_world_eval,
        estimate_s=120,
    ),
]
CAI_STAGE_NAMES = [s.name for s in CAI_STAGES]


# RL with verifiable rewards and tools (`--method grpo-verifier`, docs/methods.md "Verifiable rewards"): the
# world's verifiable tasks and tool-using demonstrations, SFT on those, GRPO whose reward is the task's checker
# and whose episodes call the world's tools, then accuracy with the tools on the held-out tasks. No labels and
# no reward model. Its own stage names (and [tables]) over the same folders as the RLHF run: use its own --out.
RLVR_METHOD = "grpo-verifier"


def _rlvr_evaluate_paths(r: Path) -> dict:
    models = _finished_models(("sft", "grpo-verifier"))(r)
    return {
        "prompts": _p(run_path(r, "world/verifiable_eval.jsonl")),
        "judge": "gold",
        "out": _p(run_path(r, "evaluate")),
        "models": {name: _p(path) for name, path in models},
    }


RLVR_STAGES: list[Stage] = [
    replace(
        STAGES[0],
        name="rlvr_world",
        summary="the demo world with verifiable tasks and tool-using demonstrations",
    ),
    replace(
        STAGES[1],
        name="rlvr_tokenizer",
        summary="train a byte-level BPE tokenizer on the corpus and the tool-using demonstrations",
        depends=("rlvr_world",),
        # the tool demonstrations too: the call and result JSON get tokens, so episodes are half as long
        paths=lambda r: {**STAGES[1].paths(r), "chats": _p(run_path(r, "world/verifiable_tools_sft.jsonl"))},
    ),
    replace(STAGES[2], name="rlvr_pretrain", depends=("rlvr_tokenizer",)),
    Stage(
        "rlvr_sft",
        "Stage 2: SFT on demonstrations that solve verifiable tasks with the tools",
        *SFT,
        "sft",
        ("rlvr_pretrain",),
        _sft_paths(Path("pretrain"), Path("world/verifiable_tools_sft.jsonl"), None, Path("sft")),
        estimate_s=360,
    ),
    Stage(
        "grpo_verifier",
        "Stage 3: GRPO, the task's checker as the reward, the world's tools in the episodes",
        "grpo",
        "rlhfkit.ppo.trainer",
        "GRPOConfig",
        "grpo-verifier",
        ("rlvr_sft",),
        lambda r: {
            "policy": _p(run_path(r, "sft")),
            "prompts": _p(run_path(r, "world/verifiable_train.jsonl")),
            "out": _p(run_path(r, "grpo-verifier")),
        },
        estimate_s=190,
    ),
    Stage(
        "rlvr_evaluate",
        "accuracy and pass@k with the tools on held-out verifiable tasks",
        *EVALUATE,
        "evaluate",
        ("grpo_verifier",),
        _rlvr_evaluate_paths,
        estimate_s=120,
    ),
]
ALL_STAGE_NAMES = STAGE_NAMES + [
    n
    for n in [*CAI_STAGE_NAMES, *METHODS, *(s.name for s in [*HYBRID_STAGES, *RLVR_STAGES])]
    if n not in STAGE_NAMES
]


# The policy stage of `rlhfkit pipeline` without --method: rejection sampling (the reward model's best of 8
# samples per prompt, fine-tuned on), the method that gained most from the same labels in the time budget
# (docs/methods.md, "What a label is worth"). The CAI branch keeps PPO (`cai_ppo`).
DEFAULT_METHOD = "rs"


def parse_methods(text: str | None, cai: bool = False) -> list[str]:
    """A method, or a comma-separated list (`ppo,dpo`) run side by side and evaluated together; none given:
    `DEFAULT_METHOD` (`ppo` for the CAI branch, whose own stages run PPO)."""
    default = "ppo" if cai else DEFAULT_METHOD
    methods = [m.strip() for m in (text or default).split(",") if m.strip()]
    unknown = [m for m in methods if m not in (*METHODS, RLVR_METHOD)]
    if unknown or not methods:
        raise RlhfkitError(
            f"--method: unknown method '{','.join(unknown)}' (methods: {', '.join((*METHODS, RLVR_METHOD))})"
        )
    if RLVR_METHOD in methods and len(methods) > 1:
        raise RlhfkitError(f"--method {RLVR_METHOD} runs its own stages (no labels); give it alone")
    return list(dict.fromkeys(methods))


def rlhf_stages(methods: list[str]) -> list[Stage]:
    """The default stage list with its policy stage replaced by one stage per method (same SFT, same labels)."""
    if methods == ["ppo"]:
        return STAGES
    head = [s for s in STAGES if s.name not in ("ppo", "evaluate", "report")]
    if "hybrid" in methods:  # Bai et al.'s hybrid: the CAI labeler judges the harmlessness prompts
        cai = {s.name: s for s in CAI_STAGES}
        head += [cai["cai_demos"], cai["cai_labeler"], *HYBRID_STAGES]
    by_name = {s.name: s for s in METHOD_STAGES}
    evaluate = replace(
        STAGES[STAGE_NAMES.index("evaluate")],
        depends=tuple(methods),
        paths=_evaluate_paths(
            _finished_models(("base", "sft", *methods)), "evaluate", best_of_model=methods[0]
        ),
        estimate_s=120 + 40 * len(methods),
    )
    return head + [by_name[m] for m in methods] + [evaluate, STAGES[-1]]


def stage_list(cai: bool, methods: list[str]) -> list[Stage]:
    if cai and methods != ["ppo"]:
        raise RlhfkitError("--cai runs its own stages (SL-CAI, RL-CAI with PPO); it takes no --method")
    if methods == [RLVR_METHOD]:
        return RLVR_STAGES
    return CAI_STAGES if cai else rlhf_stages(methods)
