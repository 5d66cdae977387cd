"""`rlhfkit dpo`: Direct Preference Optimization (or IPO) of a policy on comparisons, with no reward model."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_command


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.dpo.trainer import DPOConfig, run

    add_config_command(
        sub,
        "dpo",
        DPOConfig,
        run,
        done="dpo: policy written to {out}",
        help="train a policy directly on comparisons with DPO or IPO (no reward model; resumes)",
        description="Direct Preference Optimization: fits the policy's implicit reward beta * log(pi / pi_ref) to "
        "the comparisons with a Bradley-Terry loss (--loss sigmoid; soft labels and --label-smoothing supported) "
        "or IPO's squared loss (--loss ipo). Rankings of K responses are one batch element holding all C(K,2) "
        "pairs. The reference's log-probs are computed once and cached in --out. Re-running the same command "
        "after a crash continues from the last checkpoint.",
    )
