"""Online iterated RLHF: the labels follow the policy.

Offline RLHF labels samples of the SFT model once; the policy then drifts to responses the reward model never
saw ranked, which is where it over-optimizes. Online RLHF (Bai et al. 2022, section 4.5; Llama 2's five rounds)
spends the same label budget in rounds, each on samples of the current policy:

    for r in 0..R-1:
        candidates  <- `rlhfkit generate` from the current policy on this round's fresh prompts
        [select     <- `rlhfkit reward select`: with --select entropy|posterior, round r >= 1 samples --pool
                       times as many sets and the previous round's reward model keeps those it is least sure of]
        comparisons <- annotators rank them (`rlhfkit label`: simulated; or people through the annotation app)
        reward model <- `rlhfkit reward train` from the SFT model on every comparison so far
        policy      <- `rlhfkit ppo` (or `dpo` on this round's labels) from the current policy, KL to the SFT model

Each step is a stage (`round_stages`: `pipeline.stages.Stage`, named `r:candidates`, `r:select` when
selecting, `r:labels`, `r:reward`, `r:policy`) run by the pipeline's runner (`pipeline.runner.run_stage`): its
`run(config)` in this process, the equivalent command printed and recorded in `out/pipeline.json`, so any
round can be reproduced by hand. The prompts of the rounds are disjoint slices of one seeded shuffle; each
round gets `label_budget // rounds` of them, so the run asks for exactly as many rankings as an offline run
with `label_budget` prompts (with `--select entropy|posterior`, rounds after the first sample `pool` times as
many prompts and label as many).

People in the loop: with `annotators = "human"` a round stops after writing its candidates and says how to
label them with `rlhfkit annotate` and where to export the comparisons; running the same command again picks
up the export and continues. Resume is the pipeline's: a stage recorded as finished with the same key is not
run again, and an interrupted training stage continues from its checkpoint, so a killed run continues where it
stopped. A run started by an older rlhfkit (finished steps in `out/online.json`) continues the same way.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhfkit.artifacts import read_manifest, write_manifest
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.pipeline.record import RunRecord, StageRecord
from rlhfkit.pipeline.runner import command_line, is_done, run_stage, stage_key
from rlhfkit.pipeline.stages import Stage

UPDATES = ("ppo", "dpo")
ANNOTATORS = ("simulated", "human")
SELECTIONS = ("random", "entropy", "posterior")


@dataclass
class OnlineConfig:
    policy: str = ""  # the SFT checkpoint: the first sampler, every RM's backbone, the KL reference
    prompts: str = ""  # prompts JSONL (with `meta` for the simulated annotators of the demo world)
    out: str = "runs/online"  # the final policy; rounds/<r>/: each round's candidates, labels, RM, policy
    rounds: int = 4  # label -> reward model -> policy update rounds
    label_budget: int = 2000  # prompts ranked over all rounds (one ranking each), as an offline run's
    update: str = "ppo"  # the policy update of each round: "ppo" (against that round's RM) or "dpo"
    annotators: str = "simulated"  # "simulated" (the demo world's pool) or "human" (the annotation app)
    n: int = 6  # responses sampled per prompt for ranking
    off_prompt: int = 2  # answers to other prompts added to each ranking (`rlhfkit generate --off-prompt`)
    candidate_tokens: int = 64  # length limit of the ranked samples
    pool_size: int = 10  # simulated annotators
    select: str = "random"  # which sets rounds after the first label: "random" (every set sampled), or
    # "entropy" / "posterior": sets for `pool` times as many prompts, of which the previous round's reward
    # model keeps the ones it is least sure how to rank (`rlhfkit reward select --by`; docs/methods.md)
    pool: int = 3  # when selecting: candidate sets sampled per set labelled
    reward_options: dict = field(default_factory=lambda: {"epochs": 1, "batch-size": 16, "lr": 1e-4})  # JSON
    # object of `rlhfkit reward train` options for every round; one epoch per round: the last round's RM
    # still sees every label once, the earlier labels up to R times
    update_options: dict = field(  # JSON object of the update command's options for every round
        default_factory=lambda: {"steps": 4, "kl-horizon": 2000, "max-new-tokens": 128}
    )
    seed: int = 0  # seeds the prompt slices, the sampling, the annotators and every training stage
    device: str = "auto"  # the reward-model and policy training's --device (auto, cpu, cuda or cuda:N)
    dtype: str = "auto"  # the reward-model and policy training's --dtype (auto, float32, bfloat16, float16)
    gradient_checkpointing: bool = False  # the reward-model and policy training's --gradient-checkpointing
    # (LoRA: give {"lora-r": 16} in --reward-options and --update-options)


def _check(cfg: OnlineConfig) -> None:
    if not cfg.policy or not cfg.prompts:
        raise RlhfkitError("--policy (the SFT checkpoint) and --prompts are required")
    if cfg.rounds < 1 or cfg.label_budget < cfg.rounds:
        raise RlhfkitError(
            f"--label-budget {cfg.label_budget} must give each of --rounds {cfg.rounds} a prompt"
        )
    if cfg.update not in UPDATES:
        raise RlhfkitError(f"--update: expected one of {', '.join(UPDATES)}, got '{cfg.update}'")
    if cfg.select not in SELECTIONS:
        raise RlhfkitError(f"--select: expected one of {', '.join(SELECTIONS)}, got '{cfg.select}'")
    if cfg.select != "random" and cfg.pool < 2:
        raise RlhfkitError(f"--pool {cfg.pool}: selecting needs at least 2 sampled sets per labelled one")
    if cfg.annotators not in ANNOTATORS:
        raise RlhfkitError(f"--annotators: expected one of {', '.join(ANNOTATORS)}, got '{cfg.annotators}'")


def selecting(cfg: OnlineConfig, r: int) -> bool:
    """Round `r` labels the sets its predecessor's reward model is least sure of (never round 0: no model yet)."""
    return cfg.select != "random" and r > 0


def round_prompts(n_records: int, cfg: OnlineConfig) -> list[list[int]]:
    """Disjoint prompt indices of every round: consecutive slices of one seeded shuffle; a selecting round
    samples `pool` prompts per label."""
    per_round = cfg.label_budget // cfg.rounds
    sizes = [per_round * (cfg.pool if selecting(cfg, r) else 1) for r in range(cfg.rounds)]
    if sum(sizes) > n_records:
        raise RlhfkitError(
            f"{cfg.prompts}: {n_records} prompts cannot give {cfg.rounds} rounds {', '.join(map(str, sizes))} "
            "fresh prompts"
        )
    order = list(range(n_records))
    random.Random(f"online:{cfg.seed}").shuffle(order)
    starts = [sum(sizes[:r]) for r in range(cfg.rounds)]
    return [sorted(order[start : start + size]) for start, size in zip(starts, sizes)]


def run(cfg: OnlineConfig) -> Path:
    """Run (or resume) every round; return the final policy folder (`cfg.out`)."""
    from rich.console import Console

    from rlhfkit.data.chats import load_prompts

    _check(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record, legacy_done = _record(out, cfg)
    console = Console()
    records = load_prompts(cfg.prompts)
    slices = round_prompts(len(records), cfg)
    keys: dict[str, str] = {}
    policy = cfg.policy
    for r in range(cfg.rounds):
        for stage, options in round_stages(cfg, r, policy, [records[i] for i in slices[r]]):
            argv = command_line(stage, out, options)
            key = keys[stage.name] = stage_key(argv, [keys.get(dep, "") for dep in stage.depends])
            if stage.name in legacy_done and stage.name not in record.stages:  # finished under online.json
                record.stages[stage.name] = StageRecord("done", key, ["rlhfkit", *argv], options)
            if not is_done(record, out, stage, key):
                run_stage(record, out, stage, options, key, console)
        policy = str(out / policy_folder(cfg, r))
    record.save(out)
    rounds = []
    for r in range(cfg.rounds):
        d = out / "rounds" / str(r)
        rm = read_manifest(d / "rm").get("metrics", {})
        pol = read_manifest(out / policy_folder(cfg, r)).get("metrics", {})
        rounds.append(
            {
                "round": r,
                "rankings": sum(1 for _ in read_jsonl(d / "comparisons.jsonl")),
                "rm_train_accuracy": rm.get("accuracy"),
                "policy_kl": pol.get("kl"),
                "policy_reward": pol.get("reward"),
            }
        )
    final = read_manifest(out)
    write_manifest(
        out,
        stage="online",
        config=cfg,
        seed=cfg.seed,
        parent=cfg.policy,
        metrics={**final.get("metrics", {}), "rankings": sum(r["rankings"] for r in rounds)},
        extra={"rounds": rounds, "update": cfg.update},
    )
    return out


def _model_options(cfg: OnlineConfig) -> dict:
    """Device, dtype and gradient checkpointing for the training stages (the options dicts can override)."""
    options = {"device": cfg.device, "dtype": cfg.dtype}
    return {**options, "gradient-checkpointing": True} if cfg.gradient_checkpointing else options


def round_stages(cfg: OnlineConfig, r: int, policy: str, prompts: list[dict]) -> list[tuple[Stage, dict]]:
    """Round `r`'s stages, each with its options (the flags that are not files): candidates sampled from
    `policy` on the round's `prompts`, simulated labels (people label through the annotation app instead: no
    stage), the reward model trained from the SFT model on every label so far, and the policy update from
    `policy`. Names are `r:step`; paths are relative to the run folder `o`."""
    d = Path("rounds") / str(r)
    seed = cfg.seed * 1000 + r
    target = policy_folder(cfg, r)
    select = selecting(cfg, r)
    sampled = d / ("pool.jsonl" if select else "candidates.jsonl")
    ready = f"{r}:select" if select else f"{r}:candidates"  # the sets to label are written
    labelled = f"{r}:labels" if cfg.annotators == "simulated" else ready
    after_previous = (f"{r - 1}:policy",) if r else ()
    candidates = Stage(
        f"{r}:candidates",
        f"round {r}: sample candidates from the current policy",
        "generate",
        "rlhfkit.generation.candidates",
        "CandidatesConfig",
        str(sampled),
        after_previous,
        lambda o: {
            "model": policy,
            "prompts": str(o / d / "prompts.jsonl"),
            "out": str(o / sampled),
        },
        before=lambda o: write_jsonl(o / d / "prompts.jsonl", prompts),
    )
    chooser = Stage(
        f"{r}:select",
        f"round {r}: the previous reward model keeps the sets it is least sure of",
        "reward select",
        "rlhfkit.reward.select",
        "SelectConfig",
        str(d / "candidates.jsonl"),
        (f"{r}:candidates", f"{r - 1}:reward"),
        lambda o: {
            "candidates": str(o / sampled),
            "model": str(o / "rounds" / str(r - 1) / "rm"),
            "out": str(o / d / "candidates.jsonl"),
        },
    )
    labels = Stage(
        f"{r}:labels",
        f"round {r}: the simulated annotators rank the candidates",
        "label",
        "rlhfkit.world.labels",
        "LabelsConfig",
        str(d / "comparisons.jsonl"),
        (ready,),
        lambda o: {"candidates": str(o / d / "candidates.jsonl"), "out": str(o / d / "comparisons.jsonl")},
    )
    reward = Stage(
        f"{r}:reward",
        f"round {r}: the reward model, from the SFT model, on every label so far",
        "reward train",
        "rlhfkit.reward.train",
        "RewardConfig",
        str(d / "rm"),
        (labelled, *((f"{r - 1}:reward",) if r else ())),
        lambda o: {
            "model": cfg.policy,
            "data": str(o / d / "all_comparisons.jsonl"),
            "calibration": str(o / sampled),  # the policy's samples, not the uncertain subset
            "out": str(o / d / "rm"),
        },
        before=lambda o: _gather_labels(cfg, o, r),
    )
    update = _update_stage(cfg, r, policy, target, (f"{r}:reward", labelled, *after_previous))
    stages = [
        (
            candidates,
            {"n": cfg.n, "off-prompt": cfg.off_prompt, "max-new-tokens": cfg.candidate_tokens, "seed": seed},
        ),
        (
            chooser,
            {"count": len(prompts) // cfg.pool, "by": cfg.select, "device": cfg.device, "dtype": cfg.dtype},
        ),
        (labels, {"pool-size": cfg.pool_size, "seed": seed}),
        (reward, {"seed": seed, **_model_options(cfg), **cfg.reward_options}),
        (update, {**_model_options(cfg), **cfg.update_options, "seed": seed}),
    ]
    return [
        (stage, options)
        for stage, options in stages
        if (cfg.annotators == "simulated" or stage is not labels) and (select or stage is not chooser)
    ]


def policy_folder(cfg: OnlineConfig, r: int) -> Path:
    """Round r's updated policy, relative to the run folder: the last round's is the run's output itself."""
    return Path(".") if r == cfg.rounds - 1 else Path("rounds") / str(r) / "policy"


def _update_stage(cfg: OnlineConfig, r: int, policy: str, target: Path, depends: tuple[str, ...]) -> Stage:
    """PPO against the round's reward model, or DPO on the round's on-policy pairs; the reference is the SFT
    model either way."""
    d = Path("rounds") / str(r)

    def dpo_paths(o: Path) -> dict:
        return {
            "policy": policy,
            "ref": cfg.policy,
            "data": str(o / d / "comparisons.jsonl"),
            "out": str(o / target),
        }

    def ppo_paths(o: Path) -> dict:
        return {
            "policy": policy,
            "ref": cfg.policy,
            "reward": str(o / d / "rm"),
            "prompts": cfg.prompts,
            "out": str(o / target),
        }

    module, config, paths = (
        ("rlhfkit.dpo.trainer", "DPOConfig", dpo_paths)
        if cfg.update == "dpo"
        else ("rlhfkit.ppo.trainer", "PPOConfig", ppo_paths)
    )
    summary = f"round {r}: {cfg.update} from the current policy, KL to the SFT model"
    return Stage(f"{r}:policy", summary, cfg.update, module, config, str(target), depends, paths)


def _record(out: Path, cfg: OnlineConfig) -> tuple[RunRecord, set[str]]:
    """The run's record (`pipeline.json` in `out`, as the pipeline keeps one) and the steps an older rlhfkit
    recorded as finished in `online.json`; another configuration in either is an error."""
    legacy = out / "online.json"
    record = RunRecord.load(out)
    done: set[str] = set()
    if record is None and legacy.exists():
        try:
            state = json.loads(legacy.read_text(encoding="utf-8"))
            done, config = set(state["done"]), state["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RlhfkitError(f"{legacy}: not an online run's state ({exc})") from None
        record = RunRecord(run_dir=str(out), methods=[cfg.update], config=config)
    record = record or RunRecord(run_dir=str(out), methods=[cfg.update], config=asdict(cfg))
    # a run made before a setting existed ran with its default
    if {**asdict(OnlineConfig()), **record.config} != asdict(cfg):
        raise RlhfkitError(f"{out}: holds an online run with another configuration; use a new --out")
    return record, done


def _gather_labels(cfg: OnlineConfig, out: Path, r: int) -> None:
    """Every comparison of rounds 0..r, for round r's reward model. With people in the loop, the round goes on
    once their export is where it is expected."""
    d = out / "rounds" / str(r)
    export = d / "comparisons.jsonl"
    if cfg.annotators == "human" and not export.exists():
        raise RlhfkitError(
            f"online round {r}: waiting for people's labels. The candidates are in {d / 'candidates.jsonl'}: "
            f"`rlhfkit annotate campaign create --db DB --name online-{r} --candidates {d / 'candidates.jsonl'}`, "
            f"label them, `rlhfkit annotate export --db DB --campaign online-{r} --out {export}`, then run this "
            "command again"
        )
    rows = [rec for k in range(r + 1) for _, rec in read_jsonl(out / "rounds" / str(k) / "comparisons.jsonl")]
    write_jsonl(d / "all_comparisons.jsonl", rows)
