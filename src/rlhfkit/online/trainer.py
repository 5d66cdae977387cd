"""Online iterated RLHF: the labels follow the policy.

Offline RLHF labels samples of the SFT model once; the policy then drifts to responses the reward model never
saw ranked, which is where it over-optimizes. Online RLHF (Bai et al. 2022, section 4.5; Llama 2's five rounds)
spends the same label budget in rounds, each on samples of the current policy:

    for r in 0..R-1:
        candidates  <- `rlhfkit generate` from the current policy on this round's fresh prompts
        comparisons <- annotators rank them (`rlhfkit label`: simulated; or people through the annotation app)
        reward model <- `rlhfkit reward train` from the SFT model on every comparison so far
        policy      <- `rlhfkit ppo` (or `dpo` on this round's labels) from the current policy, KL to the SFT model

Every step is a stage's `run(config)`, called in this process with the config its command would build; the
command is printed, so any round can be reproduced by hand. The prompts of the
rounds are disjoint slices of one seeded shuffle; each round gets `label_budget // rounds` of them, so the run
asks for exactly as many rankings as an offline run with `label_budget` prompts.

People in the loop: with `annotators = "human"` a round stops after writing its candidates and says how to
label them with `rlhfkit annotate` and where to export the comparisons; running the same command again picks
up the export and continues. Steps that finished are recorded in `out/online.json` and never run again, and
the training steps resume from their own checkpoints, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import importlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhfkit.artifacts import read_manifest, write_manifest
from rlhfkit.config import config_from_options, to_flags
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.errors import RlhfkitError

UPDATES = ("ppo", "dpo")
ANNOTATORS = ("simulated", "human")


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
    if cfg.annotators not in ANNOTATORS:
        raise RlhfkitError(f"--annotators: expected one of {', '.join(ANNOTATORS)}, got '{cfg.annotators}'")


def _call(command: str, module: str, config: str, options: dict) -> None:
    """Run one stage's `run(config)` in this process, with the config `rlhfkit COMMAND --options...` builds
    (printed so the step can be rerun by hand); a failure stops the round (finished steps are kept)."""
    print("$ rlhfkit " + " ".join([*command.split(), *to_flags(options)]))
    stage = importlib.import_module(module)
    stage.run(config_from_options(getattr(stage, config), options, f"online: rlhfkit {command}"))


def round_prompts(n_records: int, cfg: OnlineConfig) -> list[list[int]]:
    """Disjoint prompt indices of every round: consecutive slices of one seeded shuffle."""
    per_round = cfg.label_budget // cfg.rounds
    if per_round * cfg.rounds > n_records:
        raise RlhfkitError(
            f"{cfg.prompts}: {n_records} prompts cannot give {cfg.rounds} rounds {per_round} fresh prompts each"
        )
    order = list(range(n_records))
    random.Random(f"online:{cfg.seed}").shuffle(order)
    return [sorted(order[r * per_round : (r + 1) * per_round]) for r in range(cfg.rounds)]


def run(cfg: OnlineConfig) -> Path:
    """Run (or resume) every round; return the final policy folder (`cfg.out`)."""
    from rlhfkit.data.chats import load_prompts

    _check(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "online.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"done": []}
    if state.get("config", asdict(cfg)) != asdict(cfg):
        raise RlhfkitError(f"{out}: holds an online run with another configuration; use a new --out")
    state["config"] = asdict(cfg)

    def step(name: str, action) -> None:
        if name in state["done"]:
            return
        action()
        state["done"].append(name)
        state_path.write_text(json.dumps(state, indent=2) + "\n")

    records = load_prompts(cfg.prompts)
    slices = round_prompts(len(records), cfg)
    policy = cfg.policy
    for r in range(cfg.rounds):
        d = out / "rounds" / str(r)
        d.mkdir(parents=True, exist_ok=True)
        target = out if r == cfg.rounds - 1 else d / "policy"
        seed = cfg.seed * 1000 + r
        step(
            f"{r}:prompts", lambda d=d, r=r: write_jsonl(d / "prompts.jsonl", [records[i] for i in slices[r]])
        )
        step(
            f"{r}:candidates",
            lambda d=d, p=policy, s=seed: _call(
                "generate",
                "rlhfkit.generation.candidates",
                "CandidatesConfig",
                {
                    "model": p,
                    "prompts": str(d / "prompts.jsonl"),
                    "out": str(d / "candidates.jsonl"),
                    "n": cfg.n,
                    "off-prompt": cfg.off_prompt,
                    "max-new-tokens": cfg.candidate_tokens,
                    "seed": s,
                },
            ),
        )
        step(f"{r}:labels", lambda d=d, r=r, s=seed: _labels(cfg, d, r, s))
        step(f"{r}:all_labels", lambda d=d, r=r: _gather_labels(out, r, d / "all_comparisons.jsonl"))
        step(
            f"{r}:reward",
            lambda d=d, s=seed: _call(
                "reward train",
                "rlhfkit.reward.train",
                "RewardConfig",
                {
                    "model": cfg.policy,
                    "data": str(d / "all_comparisons.jsonl"),
                    "calibration": str(d / "candidates.jsonl"),
                    "out": str(d / "rm"),
                    "seed": s,
                    **_model_options(cfg),
                    **cfg.reward_options,
                },
            ),
        )
        step(f"{r}:policy", lambda d=d, p=policy, t=target, s=seed: _update(cfg, d, p, t, s))
        policy = str(target)
    rounds = []
    for r in range(cfg.rounds):
        d = out / "rounds" / str(r)
        rm = read_manifest(d / "rm").get("metrics", {})
        pol = read_manifest(out if r == cfg.rounds - 1 else d / "policy").get("metrics", {})
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


def _labels(cfg: OnlineConfig, d: Path, r: int, seed: int) -> None:
    if cfg.annotators == "simulated":
        _call(
            "label",
            "rlhfkit.world.labels",
            "LabelsConfig",
            {
                "candidates": str(d / "candidates.jsonl"),
                "pool-size": cfg.pool_size,
                "out": str(d / "comparisons.jsonl"),
                "seed": seed,
            },
        )
        return
    export = d / "comparisons.jsonl"
    if not export.exists():
        raise RlhfkitError(
            f"online round {r}: waiting for people's labels. The candidates are in {d / 'candidates.jsonl'}: "
            f"`rlhfkit annotate campaign create --db DB --name online-{r} --candidates {d / 'candidates.jsonl'}`, "
            f"label them, `rlhfkit annotate export --db DB --campaign online-{r} --out {export}`, then run this "
            "command again"
        )


def _gather_labels(out: Path, r: int, dest: Path) -> None:
    """Every comparison of rounds 0..r: each round's reward model learns from all labels so far."""
    rows = [rec for k in range(r + 1) for _, rec in read_jsonl(out / "rounds" / str(k) / "comparisons.jsonl")]
    write_jsonl(dest, rows)


def _update(cfg: OnlineConfig, d: Path, policy: str, target: Path, seed: int) -> None:
    options = {**_model_options(cfg), **cfg.update_options, "seed": seed}
    if cfg.update == "dpo":  # on-policy preference pairs of this round, reference = the SFT model
        _call(
            "dpo",
            "rlhfkit.dpo.trainer",
            "DPOConfig",
            {
                "policy": policy,
                "ref": cfg.policy,
                "data": str(d / "comparisons.jsonl"),
                "out": str(target),
                **options,
            },
        )
        return
    _call(
        "ppo",
        "rlhfkit.ppo.trainer",
        "PPOConfig",
        {
            "policy": policy,
            "ref": cfg.policy,
            "reward": str(d / "rm"),
            "prompts": cfg.prompts,
            "out": str(target),
            **options,
        },
    )
