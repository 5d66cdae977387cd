"""`rlhfkit dpo`: Direct Preference Optimization (or IPO) of a policy on comparisons, with no reward model."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_config_args, config_from_args

HELP = {
    "policy": "starting policy: SFT checkpoint folder (any Hugging Face causal LM with a chat template)",
    "data": "comparisons JSONL: TRL pairs (optional soft 'label' in [0, 1], 'tie') and/or K-way rankings",
    "eval_data": "held-out comparisons JSONL: loss and implicit-reward accuracy every --eval-every steps",
    "out": "output folder (checkpoint, metrics.jsonl, cached reference log-probs, rlhfkit.json)",
    "ref": "frozen reference policy folder (default: --policy)",
    "beta": "KL strength: the implicit reward is beta * log(pi / pi_ref)",
    "loss": "'sigmoid' (DPO) or 'ipo' (squared loss toward h = 1 / (2 beta))",
    "label_smoothing": "cDPO: assumed probability that a label is flipped, in [0, 0.5)",
    "max_length": "tokens per prompt + response (capped by the model); longer rows lose their tail",
    "batch_size": "comparison groups (a pair or a whole ranking) per optimizer step",
    "micro_batch_size": "comparison groups per forward pass (gradient accumulation up to --batch-size)",
    "forward_batch_size": "rows per no-grad forward (reference log-probs, evaluation)",
    "epochs": "passes over the data; sets the number of steps (0: use --max-steps)",
    "device": "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'",
    "max_steps": "optimizer steps when --epochs is 0",
    "lr": "peak learning rate",
    "min_lr_ratio": "the cosine decay ends at lr * this",
    "warmup_steps": "linear warmup steps",
    "weight_decay": "AdamW weight decay on matrices",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "grad_clip": "clip the gradient norm to this",
    "eval_every": "evaluate --eval-data every N steps (and at the end)",
    "save_every": "checkpoint every N steps (a re-run resumes from the last one)",
    "log_every": "write a metrics.jsonl line every N steps",
    "seed": "seed for initialization order and batch shuffling",
}


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.dpo.trainer import DPOConfig

    p = sub.add_parser(
        "dpo",
        help="train a policy directly on comparisons with DPO or IPO (no reward model; resumes)",
        description="Direct Preference Optimization: fits the policy's implicit reward beta * log(pi / pi_ref) to "
        "the comparisons with a Bradley-Terry loss (--loss sigmoid; soft labels and --label-smoothing supported) "
        "or IPO's squared loss (--loss ipo). Rankings of K responses are one batch element holding all C(K,2) "
        "pairs. The reference's log-probs are computed once and cached in --out. Re-running the same command "
        "after a crash continues from the last checkpoint.",
    )
    add_config_args(p, DPOConfig, HELP)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.dpo.trainer import DPOConfig, run

    out = run(config_from_args(DPOConfig, args, "dpo"))
    print(f"dpo: policy written to {out}")
    return 0
