"""Sequence log-probs: through the model's own logits, for training, and once for the frozen reference.

`sequence_logprobs` sums log pi(token) over the label (response) tokens of each row. It takes them from
`train.logits.label_logprobs`: the LM head runs only on the response positions where that is exact (plain
Llama-family heads; on the demo's rankings about two thirds of the positions are prompt tokens), fused with
the log-softmax there, and every other architecture goes through its own forward, so its logit processing
(scaling, soft-capping) is part of the probabilities we train.

The reference policy never changes, so its log-probs are a function of the data alone: `reference_table`
computes them once before training in no-grad, length-sorted batches, into a table indexed by
(group, completion). `cached_reference` keeps that table in `ref_logprobs.safetensors` in the output folder
with a fingerprint of the token rows and the reference weights, so a resumed or repeated run reuses it and
the reference model is never in memory during training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from rlhfkit.dpo.data import TokenGroup
from rlhfkit.train.chat_tokens import IGNORE
from rlhfkit.train.logits import label_logprobs
from rlhfkit.train.sft import collate
from rlhfkit.train.shared_prefix import shared_prefix_logprobs

REF_FILE = "ref_logprobs.safetensors"


def sequence_logprobs(model, batch: dict) -> torch.Tensor:
    """[rows] sum of log-probs of each row's label tokens (labels already shifted by `collate`). Rows of one
    comparison (`batch["row_groups"]`: the same id, next to each other) are computed over their common
    prompt once where the lean forward applies (`train.shared_prefix`)."""
    if "row_groups" in batch:
        shared = shared_prefix_logprobs(model, batch, batch["row_groups"])
        if shared is not None:
            return shared
    labels = batch["labels"]
    mask = labels != IGNORE
    # Rows are right-padded, so causal attention needs no mask; normalize only the positions that count.
    token_logps = label_logprobs(model, batch["input_ids"], mask, labels[mask])
    rows = mask.nonzero()[:, 0]
    return torch.zeros(labels.size(0), dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps
    )


@torch.no_grad()
def group_logprobs(
    model, groups: list[TokenGroup], pad_id: int, device, batch_size: int, description: str | None = None
) -> torch.Tensor:
    """[groups, max completions] sequence log-probs of every completion (NaN where a group has fewer).

    Groups go longest first, their rows side by side (so their common prompt is computed once, as in
    training), in batches of `batch_size` rows: padding is small and a too-large batch fails at once.
    `description` shows a progress bar (leave it None inside the training loop, which has its own).
    """
    from rlhfkit.train.loop import _progress

    longest = [max(len(ids) for ids, _ in group.rows) for group in groups]
    order = sorted(range(len(groups)), key=lambda g: -longest[g])
    cells = [(g, c) for g in order for c in range(len(groups[g].rows))]
    width = max(len(g.rows) for g in groups)
    table = torch.full((len(groups), width), float("nan"), dtype=torch.float32)
    was_training = model.training
    model.eval()
    with _progress(len(cells), description is not None) as progress:
        task = progress.add_task(description or "", total=len(cells), info="")
        for start in range(0, len(cells), batch_size):
            chunk = cells[start : start + batch_size]
            batch = collate([groups[g].rows[c] for g, c in chunk], pad_id, device)
            batch["row_groups"] = [g for g, _ in chunk]
            logps = sequence_logprobs(model, batch).float().cpu()
            for (g, c), value in zip(chunk, logps):
                table[g, c] = value
            progress.update(task, advance=len(chunk))
    model.train(was_training)
    return table


def rows_fingerprint(groups: list[TokenGroup]) -> str:
    """Hash of the exact token rows and label masks (so data, tokenizer and max_length changes all show)."""
    h = hashlib.sha256()
    for g in groups:
        h.update(json.dumps([g.rows, [(p.better, p.worse) for p in g.pairs]]).encode())
    return h.hexdigest()[:16]


def model_fingerprint(path: str | Path) -> str:
    """Hash of a checkpoint folder's config and weight files (their bytes)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin") or f.name == "config.json"):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def cached_reference(
    out: Path, fingerprint: str, compute: Callable[[], dict[str, torch.Tensor]], write: bool = True, log=print
) -> dict[str, torch.Tensor]:
    """The reference tables from `out/ref_logprobs.safetensors` if their fingerprint matches, else `compute()`.

    Written atomically (temporary file, then rename) so an interrupted run never leaves half a table.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(out) / REF_FILE
    if path.exists():
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") == fingerprint:
                log(f"dpo: reference log-probs from {path}")
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    tables = compute()
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(
            {k: v.contiguous() for k, v in tables.items()}, str(tmp), metadata={"fingerprint": fingerprint}
        )
        tmp.replace(path)
    return tables
