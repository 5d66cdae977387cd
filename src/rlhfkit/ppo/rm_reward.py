"""`--reward FOLDER` (a reward model) or `--reward A,B,C` (an ensemble of reward models) as PPO's reward.

An ensemble's members are reward models trained on the same labels (other seeds, other data orders). The
reward of a response is the mean of the members' scores minus `ensemble_penalty` times their standard
deviation: where the members disagree, the reward model is unsure, and a policy that climbs into that region is
probably exploiting one member's error rather than finding a better answer (Coste et al. 2023, "Reward Model
Ensembles Help Mitigate Overoptimization"). Each member's scores are first divided by its own score std (from
its `rlhfkit.json`), so that members on different scales weigh the same and the trainer is told the std is 1.
"""

from __future__ import annotations

import torch

from rlhfkit.artifacts import read_manifest
from rlhfkit.ppo.rollout import RewardFn


def reward_folders(spec: str) -> list[str]:
    """The reward-model folders a `--reward` value names (one, or several separated by commas)."""
    return [part.strip() for part in spec.split(",") if part.strip()]


def rm_reward_fn(
    path: str,
    device,
    max_length: int | None,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    bf16: bool = False,
) -> tuple[RewardFn, dict]:
    """A reward function over a reward-model folder (a LoRA RM's adapter folder too), and the RM's recorded
    score statistics. The RM is frozen, so it is loaded in `dtype`; `bf16`: it scores under a CPU bf16
    autocast (`train.precision.Precision.scorer_bf16`)."""
    from rlhfkit.reward.model import encode, load_scorer, score_ids

    rm, rm_tokenizer, max_length = load_scorer(path, device, max_length, dtype=dtype, optimize=True)

    def score(prompts: list[list[dict]], texts: list[str], _ids: list[list[int]]) -> list[float]:
        rows = [
            encode(rm_tokenizer, p, [{"role": "assistant", "content": t}], max_length)
            for p, t in zip(prompts, texts)
        ]
        return score_ids(rm, rm_tokenizer, rows, batch_size, bf16)

    manifest = read_manifest(path)
    std = (manifest.get("calibration") or {}).get("std") or (manifest.get("metrics") or {}).get("score_std")
    return score, ({"score_std": float(std)} if std else {})


def ensemble_reward_fn(
    spec: str,
    penalty: float,
    device,
    max_length: int | None,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    bf16: bool = False,
) -> tuple[RewardFn, dict]:
    """The reward function of `--reward` (one folder, or an ensemble `A,B,C`: mean - penalty * std of the
    members' normalized scores) and its statistics for the trainer's normalization."""
    folders = reward_folders(spec)
    if len(folders) == 1:
        return rm_reward_fn(folders[0], device, max_length, batch_size, dtype, bf16)
    members = []
    for folder in folders:
        fn, stats = rm_reward_fn(folder, device, max_length, batch_size, dtype, bf16)
        members.append((fn, stats.get("score_std")))

    def score(prompts: list[list[dict]], texts: list[str], ids: list[list[int]]) -> list[float]:
        table = torch.tensor([fn(prompts, texts, ids) for fn, _ in members], dtype=torch.float64)
        # A member without a recorded std is scaled by its std on this batch (a batch of one: not scaled).
        stds = [
            std or (float(row.std()) if row.numel() > 1 else 1.0) or 1.0
            for (_, std), row in zip(members, table)
        ]
        table = table / torch.tensor(stds, dtype=torch.float64)[:, None]
        return (table.mean(0) - penalty * table.std(0, correction=0)).tolist()

    return score, {"score_std": 1.0, "ensemble": len(folders), "ensemble_penalty": penalty}
