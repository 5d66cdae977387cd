"""The whole pipeline in one command: world → tokenizer → pretrain → sft → candidates → labels → reward → ppo
→ evaluate → report, each stage writing its own folder under the run directory.

Each stage is the same `rlhfkit` subcommand a user would type, built from the pipeline config: a table per
stage whose keys are that command's flags (`[pretrain] preset = "tiny"` → `--preset tiny`), so every stage's
command can be reproduced by hand and every option of every stage can be set from one TOML file. A few stages
also run a step after their command (`Stage.after`), each with a command of its own too: the comparisons'
split by prompt item (`rlhfkit data split`), the two-annotator agreement ceiling (`rlhfkit label
--agreement-out`) and the CAI gold-judge measures (`rlhfkit cai world-eval`). The rest only arrange files for
the next command: the CAI critic's demonstrations are critiques.jsonl + revisions.jsonl concatenated, the
unrevised control set is each chain's first answer as a chat, and the hybrid training set is the people's
non-harmlessness rankings plus the AI labels (`_split_critic_demos`, `_write_unrevised`, `_hybrid_split`).

Skipping and resuming: a stage's *key* is a hash of its command line and of the keys of the stages it reads.
A stage whose key matches the one recorded as finished in `pipeline.json` is skipped; any upstream change
changes the keys downstream, so exactly the affected stages rerun. A stage that was interrupted reruns the
same command, and the training stages continue from their last checkpoint. If a stage's configuration
changed since it was started, its folder is cleared first (an old checkpoint must not leak into a new run).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.config import DEFAULTS_FILE, load_toml
from rlhfkit.errors import RlhfkitError


@dataclass
class Stage:
    name: str
    summary: str
    output: str  # folder (relative to the run dir) the stage writes
    depends: list[str]
    argv: Callable[[Path], list[str]]  # the fixed part of the command (paths); options come from the config
    after: Callable[[Path, dict], None] | None = None  # pipeline-side post-processing (e.g. a data split)
    estimate_s: float = 60.0  # default-config duration on a 2-core CPU, for the ETA before a first run


def _world(r: Path) -> list[str]:
    return ["world", "build", "--out", str(r / "world")]


def _tokenizer(r: Path) -> list[str]:
    return ["tokenizer", "train", "--data", str(r / "world" / "corpus.jsonl"), "--out", str(r / "tokenizer")]


def _pretrain(r: Path) -> list[str]:
    return [
        "pretrain",
        "--data",
        str(r / "world" / "corpus.jsonl"),
        "--tokenizer",
        str(r / "tokenizer"),
        "--out",
        str(r / "base"),
    ]


# Command builders shared by the ordinary and the Constitutional AI stage lists.
def sft_cmd(model: Path, data: Path, val: Path, out: Path) -> list[str]:
    return ["sft", "--model", str(model), "--data", str(data), "--val-data", str(val), "--out", str(out)]


def generate_cmd(model: Path, prompts: Path, out: Path) -> list[str]:
    return ["generate", "--model", str(model), "--prompts", str(prompts), "--out", str(out)]


def reward_cmd(model: Path, comparisons: Path, calibration: Path, out: Path) -> list[str]:
    return ["reward", "train", "--model", str(model), "--data", str(comparisons / "train.jsonl"), "--eval-data",
            str(comparisons / "eval.jsonl"), "--calibration", str(calibration), "--out", str(out)]  # fmt: skip


def ppo_cmd(policy: Path, reward: Path, prompts: Path, out: Path) -> list[str]:
    return [
        "ppo",
        "--policy",
        str(policy),
        "--reward",
        str(reward),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
    ]


def evaluate_cmd(prompts: Path, out: Path, models: list[tuple[str, Path]]) -> list[str]:
    argv = ["evaluate", "--prompts", str(prompts), "--judge", "gold", "--out", str(out)]
    for name, path in models:
        argv += ["--model", f"{name}={path}"]
    return argv


def _sft(r: Path) -> list[str]:
    return sft_cmd(r / "base", r / "world" / "sft.jsonl", r / "world" / "sft_val.jsonl", r / "sft")


def _candidates(r: Path) -> list[str]:
    return generate_cmd(r / "sft", r / "world" / "prompts.jsonl", r / "candidates" / "candidates.jsonl")


def _labels(r: Path) -> list[str]:
    return [
        "label",
        "--candidates",
        str(r / "candidates" / "candidates.jsonl"),
        "--out",
        str(r / "comparisons" / "all.jsonl"),
    ]


def _split_comparisons(r: Path, opts: dict) -> None:
    """`rlhfkit data split`: hold out 10% of the prompt items (all their lines) for measuring the reward model."""
    from rlhfkit.data.comparisons import write_split

    write_split(r / "comparisons" / "all.jsonl", r / "comparisons")


def _labels_after(r: Path, opts: dict) -> None:
    _split_comparisons(r, opts)
    _measure_label_agreement(r, opts)


def _measure_label_agreement(r: Path, opts: dict) -> None:
    """`rlhfkit label --agreement-out`: two annotators' agreement on these candidates -> agreement.json."""
    from rlhfkit.world.annotators import agreement_ceiling

    lines = (r / "candidates" / "candidates.jsonl").read_text(encoding="utf-8").splitlines()[:500]
    out = agreement_ceiling([json.loads(line) for line in lines], pool_size=int(opts.get("pool-size", 10)))
    (r / "comparisons" / "agreement.json").write_text(json.dumps(out, indent=2))


def _reward(r: Path) -> list[str]:
    return reward_cmd(r / "sft", r / "comparisons", r / "candidates" / "candidates.jsonl", r / "rm")


# The policy-optimization methods `--method` chooses from; each writes its policy to <run>/<method>/.
# All start from the same SFT model; all but dpo read the reward model, dpo reads the comparisons directly.
METHODS = ("ppo", "dpo", "rloo", "grpo", "rs", "online", "hybrid")


def _policy_stage_argv(method: str) -> Callable[[Path], list[str]]:
    def argv(r: Path) -> list[str]:
        if method == "online":  # ranks its own samples round by round: the same label budget, spent online
            return ["online", "--policy", str(r / "sft"), "--prompts", str(r / "world" / "prompts.jsonl"),
                    "--out", str(r / "online")]  # fmt: skip
        if method == "dpo":
            c = r / "comparisons"
            return ["dpo", "--policy", str(r / "sft"), "--data", str(c / "train.jsonl"),
                    "--eval-data", str(c / "eval.jsonl"), "--out", str(r / "dpo")]  # fmt: skip
        rm = r / "cai" / "hybrid" / "rm" if method == "hybrid" else r / "rm"
        cmd = ppo_cmd(r / "sft", rm, r / "world" / "prompts.jsonl", r / method)
        return ["ppo" if method == "hybrid" else method, *cmd[1:]]

    return argv


METHOD_STAGES = {
    "ppo": ("Stage 3c: PPO against the reward model with a KL leash", ["reward"], 400),
    "dpo": ("Stage 3c: DPO straight from the comparisons (no reward model, no rollouts)", ["labels"], 300),
    "rloo": ("Stage 3c: RLOO, critic-free RL against the reward model", ["reward"], 300),
    "grpo": ("Stage 3c: GRPO, group-normalized critic-free RL", ["reward"], 300),
    "rs": ("Stage 3c: rejection sampling, fine-tuning on the RM's best of n", ["reward"], 200),
    "online": (
        "Stage 3: online iterated RLHF, rounds of labels on the current policy's samples",
        ["sft"],
        600,
    ),
    "hybrid": (
        "Stage 3c: PPO against the hybrid RM (human helpfulness, AI harmlessness)",
        ["hybrid_reward"],
        400,
    ),
}


def parse_methods(text: str | None) -> list[str]:
    """`ppo`, or a comma-separated list (`ppo,dpo`) run side by side and evaluated together."""
    methods = [m.strip() for m in (text or "ppo").split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise RlhfkitError(f"--method: unknown method '{','.join(unknown)}' (methods: {', '.join(METHODS)})")
    return list(dict.fromkeys(methods))


def _evaluate_argv(methods: list[str]) -> Callable[[Path], list[str]]:
    def argv(r: Path) -> list[str]:
        names = ("base", "sft", *methods)
        models = [(name, r / name) for name in names if (r / name / "config.json").exists()]
        return evaluate_cmd(r / "world" / "eval_prompts.jsonl", r / "eval", models)

    return argv


def _report(r: Path) -> list[str]:
    return ["report", "--run", str(r)]


STAGES: list[Stage] = [
    Stage(
        "world",
        "build the demo world (corpus, demonstrations, prompts, gold judge)",
        "world",
        [],
        _world,
        estimate_s=3,
    ),
    Stage(
        "tokenizer",
        "train a byte-level BPE tokenizer on the corpus",
        "tokenizer",
        ["world"],
        _tokenizer,
        estimate_s=10,
    ),
    Stage(
        "pretrain",
        "Stage 1: pretrain a base model (a text completer)",
        "base",
        ["tokenizer"],
        _pretrain,
        estimate_s=300,
    ),
    Stage(
        "sft", "Stage 2: supervised fine-tuning on demonstrations", "sft", ["pretrain"], _sft, estimate_s=300
    ),
    Stage(
        "candidates",
        "sample K responses per prompt from the SFT model",
        "candidates",
        ["sft"],
        _candidates,
        estimate_s=120,
    ),
    Stage(
        "labels",
        "simulated annotators rank the candidates",
        "comparisons",
        ["candidates"],
        _labels,
        _labels_after,
        10,
    ),
    Stage(
        "reward",
        "Stage 3b: train the reward model (Bradley-Terry)",
        "rm",
        ["labels"],
        _reward,
        estimate_s=200,
    ),
    Stage(
        "ppo",
        "Stage 3c: PPO against the reward model with a KL leash",
        "ppo",
        ["reward"],
        _policy_stage_argv("ppo"),
        estimate_s=400,
    ),
    Stage(
        "evaluate",
        "win rates, probes and samples judged by the gold judge",
        "eval",
        ["ppo"],
        _evaluate_argv(["ppo"]),
        estimate_s=120,
    ),
    Stage("report", "write report.html", "report.html", ["evaluate"], _report, estimate_s=10),
]
STAGE_NAMES = [s.name for s in STAGES]


# Human labels for helpfulness, AI labels for harmlessness (Bai et al. 2022, "Constitutional AI", section 4):
# the CAI labeler compares the same candidates on the harmful and benign-look-alike prompts only, and the
# reward model trains on those AI labels plus the people's rankings of every other prompt.
HARMLESSNESS_CATEGORIES = ("harmful", "benign_risky")


def _hybrid_labels(r: Path) -> list[str]:
    return ["cai", "label", "--labeler", str(r / "cai" / "labeler"), "--candidates",
            str(r / "candidates" / "candidates.jsonl"), "--categories", *HARMLESSNESS_CATEGORIES,
            "--out", str(r / "cai" / "hybrid" / "ai.jsonl")]  # fmt: skip


def _hybrid_split(r: Path, opts: dict) -> None:
    """train.jsonl: people's rankings of the helpfulness prompts + the AI labels of the harmlessness prompts;
    eval.jsonl: the people's held-out rankings of every prompt (how well the hybrid RM agrees with people)."""
    h = r / "cai" / "hybrid"
    human = (r / "comparisons" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    helpful = [ln for ln in human if json.loads(ln).get("category") not in HARMLESSNESS_CATEGORIES]
    ai = (h / "ai.jsonl").read_text(encoding="utf-8").splitlines()
    (h / "train.jsonl").write_text("".join(ln + "\n" for ln in helpful + ai), encoding="utf-8")
    shutil.copyfile(r / "comparisons" / "eval.jsonl", h / "eval.jsonl")


def _hybrid_reward(r: Path) -> list[str]:
    h = r / "cai" / "hybrid"
    return reward_cmd(r / "sft", h, r / "candidates" / "candidates.jsonl", h / "rm")


HYBRID_STAGES = [
    Stage("hybrid_labels", "AI labels for the harmlessness prompts (CAI labeler), merged with human labels",
          "cai/hybrid", ["labels", "cai_labeler"], _hybrid_labels, _hybrid_split, 200),
    Stage("hybrid_reward", "reward model on human helpfulness + AI harmlessness labels", "cai/hybrid/rm",
          ["hybrid_labels"], _hybrid_reward, estimate_s=200),
]  # fmt: skip


def rlhf_stages(methods: list[str]) -> list[Stage]:
    """The default stage list with its policy stage replaced by one stage per method (same SFT, same labels)."""
    if methods == ["ppo"]:
        return STAGES
    head = [s for s in STAGES if s.name not in ("ppo", "evaluate", "report")]
    if "hybrid" in methods:  # Bai et al.'s hybrid: the CAI labeler judges the harmlessness prompts
        cai = {s.name: s for s in CAI_STAGES}
        head += [cai["cai_demos"], cai["cai_labeler"], *HYBRID_STAGES]
    policy = [
        Stage(
            m,
            METHOD_STAGES[m][0],
            m,
            METHOD_STAGES[m][1],
            _policy_stage_argv(m),
            estimate_s=METHOD_STAGES[m][2],
        )
        for m in methods
    ]
    evaluate = Stage(
        "evaluate", "win rates, probes and samples judged by the gold judge", "eval", methods,
        _evaluate_argv(methods), estimate_s=60 + 40 * len(methods),
    )  # fmt: skip
    return head + policy + [evaluate, STAGES[-1]]


# Constitutional AI variant (`--cai`): principles and AI feedback replace the human comparisons. It starts
# from the same SFT model as the RLHF branch, so "does CAI beat SFT" compares against the very same model.
def _cai_demos(r: Path) -> list[str]:
    return ["cai", "world-data", "--world", str(r / "world"), "--out", str(r / "cai" / "demos")]


def _split_critic_demos(r: Path, opts: dict) -> None:
    """The critic learns critiques and revisions; the labeler learns judgments (each file is one job)."""
    d = r / "cai" / "demos"
    text = "".join((d / name).read_text(encoding="utf-8") for name in ("critiques.jsonl", "revisions.jsonl"))
    (d / "critic_demos.jsonl").write_text(text, encoding="utf-8")


def _cai_critic(r: Path) -> list[str]:
    return ["sft", "--model", str(r / "sft"), "--data", str(r / "cai" / "demos" / "critic_demos.jsonl"),
            "--out", str(r / "cai" / "critic")]  # fmt: skip


def _cai_labeler(r: Path) -> list[str]:
    return ["sft", "--model", str(r / "sft"), "--data", str(r / "cai" / "demos" / "judgments.jsonl"),
            "--out", str(r / "cai" / "labeler")]  # fmt: skip


def _cai_revise(r: Path) -> list[str]:
    # The policy writes the first answer; the critic critiques and revises it; the labeler checks each revision.
    c = r / "cai"
    return ["cai", "revise", "--model", str(r / "sft"), "--prompts", str(r / "world" / "prompts.jsonl"),
            "--critic", str(c / "critic"), "--verifier", str(c / "labeler"),
            "--out", str(c / "revisions" / "revisions.jsonl")]  # fmt: skip


def _write_unrevised(r: Path, opts: dict) -> None:
    """The same prompts with the first, unrevised answers: SFT on them (`cai_control`) shows how much of
    SL-CAI's gain is only fine-tuning on the model's own tempered samples, and how much the revisions add."""
    from rlhfkit.data.jsonl import read_jsonl, write_jsonl

    d = r / "cai" / "revisions"
    rows = [{"id": f"{c['id']}-unrevised", "messages": [*c["prompt"], {"role": "assistant", "content": c["initial"]}],
             "category": c.get("category", "")}
            for _, c in read_jsonl(d / "revisions.chains.jsonl") if c["initial"]]  # fmt: skip
    write_jsonl(d / "unrevised.jsonl", rows)


def _cai_control(r: Path) -> list[str]:
    c = r / "cai"
    return sft_cmd(
        r / "sft", c / "revisions" / "unrevised.jsonl", r / "world" / "sft_val.jsonl", c / "control"
    )


def _sl_cai(r: Path) -> list[str]:
    c = r / "cai"
    return sft_cmd(
        r / "sft", c / "revisions" / "revisions.jsonl", r / "world" / "sft_val.jsonl", c / "sl_cai"
    )


def _cai_candidates(r: Path) -> list[str]:
    return generate_cmd(
        r / "cai" / "sl_cai", r / "world" / "prompts.jsonl", r / "cai" / "candidates" / "candidates.jsonl"
    )


def _cai_labels(r: Path) -> list[str]:
    return ["cai", "label", "--labeler", str(r / "cai" / "labeler"), "--candidates", str(r / "cai" / "candidates" / "candidates.jsonl"),
            "--out", str(r / "cai" / "comparisons" / "all.jsonl")]  # fmt: skip


def _cai_split(r: Path, opts: dict) -> None:
    _split_comparisons(r / "cai", opts)


def _cai_reward(r: Path) -> list[str]:
    c = r / "cai"
    return reward_cmd(c / "sl_cai", c / "comparisons", c / "candidates" / "candidates.jsonl", c / "rm")


def _cai_ppo(r: Path) -> list[str]:
    return ppo_cmd(r / "cai" / "sl_cai", r / "cai" / "rm", r / "world" / "prompts.jsonl", r / "cai" / "ppo")


def _cai_evaluate(r: Path) -> list[str]:
    c = r / "cai"
    models = [
        ("sft", r / "sft"),
        ("self_distilled", c / "control"),
        ("sl_cai", c / "sl_cai"),
        ("cai_ppo", c / "ppo"),
    ]
    return evaluate_cmd(r / "world" / "eval_prompts.jsonl", c / "eval", models)


def _cai_world_eval(r: Path, opts: dict) -> None:
    """`rlhfkit cai world-eval` on the CAI branch's chains and labels -> cai/eval/world_eval.json."""
    from rlhfkit.cai.world_eval import world_eval

    c, rlhf = r / "cai", r / "comparisons" / "all.jsonl"
    result = world_eval(c / "revisions" / "revisions.chains.jsonl", c / "comparisons" / "all.jsonl",
                        rlhf if rlhf.exists() else None)  # fmt: skip
    (c / "eval" / "world_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


CAI_STAGES: list[Stage] = STAGES[:4] + [
    Stage(
        "cai_demos",
        "demo-world demonstrations of critiques, revisions and judgments",
        "cai/demos",
        ["world"],
        _cai_demos,
        _split_critic_demos,
        20,
    ),
    Stage(
        "cai_critic",
        "the critic: SFT on critiques and revisions",
        "cai/critic",
        ["sft", "cai_demos"],
        _cai_critic,
        estimate_s=400,
    ),  # fmt: skip
    Stage(
        "cai_labeler",
        "the labeler: SFT on multiple-choice judgments",
        "cai/labeler",
        ["sft", "cai_demos"],
        _cai_labeler,
        estimate_s=450,
    ),  # fmt: skip
    Stage(
        "cai_revise",
        "SL-CAI: the critic critiques and revises the SFT model's answers; the labeler checks each revision",
        "cai/revisions",
        ["cai_critic", "cai_labeler"],
        _cai_revise,
        _write_unrevised,
        120,
    ),
    Stage("sl_cai", "SFT on the final revisions", "cai/sl_cai", ["cai_revise"], _sl_cai, estimate_s=20),
    Stage(
        "cai_control",
        "control: SFT on the same answers unrevised",
        "cai/control",
        ["cai_revise"],
        _cai_control,
        estimate_s=20,
    ),  # fmt: skip
    Stage(
        "cai_candidates",
        "sample K responses per prompt from the SL-CAI model",
        "cai/candidates",
        ["sl_cai"],
        _cai_candidates,
        estimate_s=120,
    ),
    Stage(
        "cai_labels",
        "RL-CAI: the AI labeler compares pairs under sampled principles (soft labels)",
        "cai/comparisons",
        ["cai_candidates", "cai_labeler"],
        _cai_labels,
        _cai_split,
        200,
    ),
    Stage("cai_reward", "reward model on AI labels", "cai/rm", ["cai_labels"], _cai_reward, estimate_s=200),
    Stage(
        "cai_ppo",
        "PPO against the AI-feedback reward model",
        "cai/ppo",
        ["cai_reward"],
        _cai_ppo,
        estimate_s=400,
    ),
    Stage(
        "cai_evaluate",
        "SFT vs the unrevised control vs SL-CAI vs RL-CAI, judged by the gold judge",
        "cai/eval",
        ["cai_ppo", "cai_control"],
        _cai_evaluate,
        _cai_world_eval,
        120,
    ),
]
CAI_STAGE_NAMES = [s.name for s in CAI_STAGES]
ALL_STAGE_NAMES = STAGE_NAMES + [
    n for n in [*CAI_STAGE_NAMES, *METHODS, *(s.name for s in HYBRID_STAGES)] if n not in STAGE_NAMES
]

# Defaults tuned for a 2-core CPU: flags of each stage's command. `--quick` overrides some of them.
# The CAI branch's PPO runs like the RLHF branch's. Each stage gets its own copy of the table, so a user's
# [ppo] table leaves [cai_ppo] alone.
# Defaults tuned for a 2-core CPU live in the shipped `defaults.toml` (one table per stage, keys are that
# command's flags), so `rlhfkit ppo --config defaults` runs exactly the pipeline's PPO stage. `--quick`
# overrides some of them.
DEFAULTS: dict[str, dict] = load_toml(DEFAULTS_FILE)
PPO_QUICK = {"steps": 2, "batch-size": 16, "max-new-tokens": 24}
QUICK: dict[str, dict] = {
    "world": {"size": "small"},
    "tokenizer": {"vocab-size": 1024},
    "pretrain": {"preset": "micro", "max-steps": 60, "seq-len": 128, "eval-every": 30},
    "sft": {"epochs": 0, "max-steps": 40, "eval-every": 20},
    "candidates": {"n": 2, "off-prompt": 1, "max-new-tokens": 24},
    "reward": {"epochs": 0, "max-steps": 20},
    "ppo": dict(PPO_QUICK),
    "dpo": {"epochs": 0, "max-steps": 10},
    "rloo": dict(PPO_QUICK),
    "grpo": dict(PPO_QUICK),
    "rs": {"n": 2, "prompts-per-round": 64, "max-new-tokens": 24},
    "online": {
        "rounds": 2,
        "label-budget": 64,
        "n": 2,
        "off-prompt": 1,
        "candidate-tokens": 24,
        "reward-options": {"epochs": 0, "max-steps": 10},
        "update-options": dict(PPO_QUICK),
    },  # fmt: skip
    "evaluate": {"n-prompts": 40},
    "cai_demos": {"chains": 100, "judgments": 100, "max-words": 120},  # short: the quick tokenizer is small
    "cai_critic": {"epochs": 0, "max-steps": 10},
    "cai_labeler": {"epochs": 0, "max-steps": 10},
    "cai_revise": {"revisions": 1, "max-new-tokens": 24},
    "sl_cai": {"epochs": 0, "max-steps": 10},
    "cai_control": {"epochs": 0, "max-steps": 10},
    "cai_candidates": {"n": 2, "off-prompt": 1, "max-new-tokens": 24},
    "cai_reward": {"epochs": 0, "max-steps": 20},
    "cai_ppo": dict(PPO_QUICK),
    "cai_evaluate": {"n-prompts": 40},
    "hybrid_reward": {"epochs": 0, "max-steps": 20},
    "hybrid": dict(PPO_QUICK),
}


# Stages whose commands have no randomness to seed (and so no --seed flag); `seed` seeds every other stage.
UNSEEDED = ("tokenizer", "report")


def stage_options(config: dict, quick: bool) -> dict[str, dict]:
    """Defaults, then `--quick` overrides, then the user's TOML tables (keys with `_` or `-` both accepted)."""
    opts = copy.deepcopy(DEFAULTS)
    if quick:
        for name, extra in QUICK.items():
            opts[name].update(extra)
    seed = config.get("seed")
    for name, table in config.items():
        if name == "seed":
            continue
        if name not in opts:
            raise RlhfkitError(
                f"pipeline config: unknown stage table [{name}] (stages: {', '.join(ALL_STAGE_NAMES)})"
            )
        if not isinstance(table, dict):
            raise RlhfkitError(f"pipeline config: [{name}] must be a table of that command's options")
        opts[name].update({k.replace("_", "-"): v for k, v in table.items()})
    if seed is not None:
        for name in opts:
            if name not in UNSEEDED:
                opts[name].setdefault("seed", seed)
    return opts


def to_flags(options: dict) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key)
        elif isinstance(value, dict):  # e.g. `rlhfkit online --update-options '{"steps": 4}'`
            out += [flag, json.dumps(value)]
        elif isinstance(value, list):
            for v in value:
                out += [flag, str(v)]
        elif value is not None:
            out += [flag, str(value)]
    return out


@dataclass
class PipelineState:
    path: Path
    data: dict = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> PipelineState:
        path = run_dir / "pipeline.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.setdefault("stages", {})
        return cls(path, data)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(self.path)


def stage_key(argv: list[str], upstream_keys: list[str]) -> str:
    return hashlib.sha256(json.dumps([argv, upstream_keys]).encode()).hexdigest()[:16]


def headline_metrics(run_dir: Path, stage: Stage) -> dict:
    """A few numbers worth showing for a finished stage (read from what the stage wrote)."""
    out = run_dir / stage.output
    if (out / "world.json").exists():
        files = json.loads((out / "world.json").read_text()).get("files", {})
        return {
            name.removesuffix(".jsonl") + "_records": f.get("count")
            for name, f in files.items()
            if isinstance(f, dict)
        }
    candidates = [out / "rlhfkit.json", out / "world.json", out / "results.json", out / "summary.json"]
    for path in candidates:
        if path.exists():
            data = json.loads(path.read_text())
            metrics = data.get("metrics", data.get("headline", data))
            flat = {
                k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            return dict(list(flat.items())[:10])
    if out.is_dir():
        files = [p for p in out.iterdir() if p.suffix == ".jsonl"]
        return {p.stem + "_records": sum(1 for _ in p.open(encoding="utf-8")) for p in files}
    return {}


def run_pipeline(run_dir: str | Path, config: dict | None = None, quick: bool = False, from_stage: str | None = None,
                 only: str | None = None, until: str | None = None, cai: bool = False, console=None,
                 method: str | None = None) -> dict:  # fmt: skip
    """Run (or resume) the pipeline in `run_dir`; returns the `pipeline.json` content."""
    from rich.console import Console

    from rlhfkit.cli import main as cli_main

    console = console or Console()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    methods = parse_methods(method)
    if cai and methods != ["ppo"]:
        raise RlhfkitError("--cai runs its own stages (SL-CAI, RL-CAI with PPO); it takes no --method")
    stages = CAI_STAGES if cai else rlhf_stages(methods)
    names = [s.name for s in stages]
    for name in (from_stage, only, until):
        if name is not None and name not in names:
            raise RlhfkitError(f"unknown stage '{name}' (stages: {', '.join(names)})")
    opts = stage_options(config or {}, quick)
    state = PipelineState.load(run_dir)
    state.data.update(
        {"run_dir": str(run_dir), "quick": quick, "cai": cai, "methods": methods, "config": config or {}}
    )
    selected = [only] if only else names[names.index(from_stage) :] if from_stage else names
    if until is not None:
        selected = [s for s in selected if names.index(s) <= names.index(until)]
    forced = set(selected) if (only or from_stage) else set()

    keys: dict[str, str] = {}
    t_start = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        argv = stage.argv(run_dir) + to_flags(opts[stage.name])
        key = stage_key(argv, [keys.get(d, "") for d in stage.depends])
        keys[stage.name] = key
        record = state.data["stages"].get(stage.name, {})
        if stage.name not in selected:
            continue
        done = (
            record.get("status") == "done" and record.get("key") == key and (run_dir / stage.output).exists()
        )
        elapsed = time.perf_counter() - t_start
        eta = sum(_estimate(state, s, quick) for s in stages[i - 1 :] if s.name in selected)
        header = f"[bold cyan]stage {i}/{len(stages)}: {stage.name}[/] — {stage.summary}"
        console.rule(f"{header}  [dim](elapsed {_hms(elapsed)}, eta ~{_hms(eta)})[/]")
        if done and stage.name not in forced:
            console.print(f"[green]up to date[/] (key {key}); skipped")
            continue
        for dep in stage.depends:
            dep_stage = stages[names.index(dep)]
            if not (run_dir / dep_stage.output).exists():
                raise RlhfkitError(
                    f"stage '{stage.name}' needs '{dep}' first ({run_dir / dep_stage.output} is missing)"
                )
        if record.get("key") not in (None, key) or stage.name in forced:
            _clear(
                run_dir / stage.output
            )  # config changed (or forced): an old checkpoint must not be resumed
        (run_dir / stage.output).parent.mkdir(parents=True, exist_ok=True)
        if stage.output not in ("report.html",) and not stage.output.endswith(".html"):
            (run_dir / stage.output).mkdir(parents=True, exist_ok=True)
        state.data["stages"][stage.name] = {
            "status": "running",
            "key": key,
            "command": ["rlhfkit", *argv],
            "options": opts[stage.name],
        }
        state.save()
        console.print("[dim]$ rlhfkit " + " ".join(argv) + "[/]")
        t0 = time.perf_counter()
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse rejects a flag: report it as this stage's failure
            code = exc.code if isinstance(exc.code, int) else 2
        if code != 0:
            state.data["stages"][stage.name]["status"] = "failed"
            state.save()
            raise RlhfkitError(
                f"stage '{stage.name}' failed (exit {code}); fix the problem and rerun: finished stages are kept"
            )
        if stage.after is not None:
            stage.after(run_dir, opts[stage.name])
        duration = time.perf_counter() - t0
        state.data["stages"][stage.name].update(
            status="done", seconds=round(duration, 1), finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            metrics=headline_metrics(run_dir, stage),
        )  # fmt: skip
        state.save()
        console.print(f"[green]done[/] in {_hms(duration)}")
    state.data["total_seconds"] = round(sum(s.get("seconds", 0) for s in state.data["stages"].values()), 1)
    state.save()
    return state.data


def _estimate(state: PipelineState, stage: Stage, quick: bool) -> float:
    rec = state.data["stages"].get(stage.name, {})
    if rec.get("status") == "done" and "seconds" in rec:
        return float(rec["seconds"])
    return stage.estimate_s / (10 if quick else 1)


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
