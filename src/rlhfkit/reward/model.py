"""Reward models: load any Hugging Face backbone with a scalar head, render conversations, score them.

A reward model is `AutoModelForSequenceClassification` with `num_labels=1`, as TRL and others expect, so an
rlhfkit RM can be used anywhere and any such RM can be used here. A causal-LM checkpoint (rlhfkit's Llama
presets) becomes `LlamaForSequenceClassification`: the score is read at the last non-pad token, which is
why `pad_token_id` must be set in the config. Encoders (BERT-like) read it at their [CLS] token.

Rendering: the tokenizer's chat template when it has one (our tokenizers do), else a plain
"User: ...\\nAssistant: ..." text. Long conversations are truncated from the left, so the response's end,
which the score depends on most, is always seen.

Score offset: after training the scores are shifted so the policy's own samples average 0. Heads with a
bias (BERT-like) absorb the shift in the bias, so raw `transformers` logits are the normalized scores. Heads
without one (Llama's `score` is bias-free) cannot, so the shift is stored as `rlhfkit_score_offset` in
`config.json` and `score_conversations` subtracts it; `transformers` users subtract it themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import torch

from rlhfkit.errors import RlhfkitError, first_line
from rlhfkit.train.lean_forward import lean_hidden_at, lean_supported
from rlhfkit.train.logits import causal_lm_of

OFFSET_KEY = "rlhfkit_score_offset"
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def load_reward_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    new_head: bool = False,
    dtype: torch.dtype = torch.float32,
):
    """(model, tokenizer) from a folder holding a sequence-classification or causal-LM checkpoint, or a LoRA
    reward model (an adapter folder from `reward train --lora-r`: merged into its base here).

    A causal LM or bare encoder gets a fresh scalar head (this is how training starts); a saved RM loads with
    its head. `new_head=True` (training) also replaces a classifier head of another size.
    """
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.artifacts import read_manifest
    from rlhfkit.load_policy import (
        check_remote_code,
        from_pretrained_kwargs,
        is_remote_code_refusal,
        remote_code_error,
    )
    from rlhfkit.lora import is_adapter_dir, load_merged_classifier
    from rlhfkit.tokenizer import load_tokenizer

    p = Path(path)
    adapter = is_adapter_dir(p)
    if not adapter and not (p / "config.json").exists():
        raise RlhfkitError(
            f"{p}: not a model checkpoint (no config.json); expected a Hugging Face model folder"
        )
    tokenizer = load_tokenizer(p)
    check_remote_code(p)
    kwargs = {"num_labels": 1, "dtype": dtype}
    try:
        if adapter:
            model = load_merged_classifier(p, **kwargs, ignore_mismatched_sizes=True)
            # The score offset of a head without bias lives in the adapter run's rlhfkit.json (no config.json).
            setattr(model.config, OFFSET_KEY, float(read_manifest(p).get("score_offset") or 0.0))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(p), **kwargs, **from_pretrained_kwargs(), ignore_mismatched_sizes=new_head
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if is_remote_code_refusal(exc):
            raise remote_code_error(p) from None
        raise RlhfkitError(f"{p}: could not load as a sequence classifier ({first_line(exc)})") from None
    if model.config.pad_token_id is None:
        # Without it a decoder cannot find the last real token of a padded row.
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.problem_type = "regression"
    return model.to(device), tokenizer


def load_scorer(
    path: str | Path,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
    dtype: torch.dtype = torch.float32,
    optimize: bool = False,
):
    """(model, tokenizer, max_length) of a trained reward model, ready to score (eval mode, no gradients).
    `optimize`: the scores will be optimized against (a policy's training, best-of-n), so an evaluation-only
    judge folder (`reward.judge_mark`) is refused.

    The one rule for how much a reward model reads when it scores: `max_length` when given, else the length
    it was trained with (`max_length` in its rlhfkit.json), else 512; never more than the model's position
    limit or the tokenizer's maximum (`default_max_length`). `rlhfkit reward eval|score`, PPO and the other
    methods, best-of-n and `evaluate --judge reward:DIR` all load through here."""
    from rlhfkit.artifacts import read_manifest
    from rlhfkit.reward.judge_mark import refuse_judge

    if optimize:
        refuse_judge(path)
    model, tokenizer = load_reward_model(path, device, dtype=dtype)
    model.eval().requires_grad_(False)
    wanted = max_length or read_manifest(path).get("max_length") or 512
    return model, tokenizer, default_max_length(model, tokenizer, int(wanted))


def render(tokenizer, prompt: list[dict], response: list[dict]) -> str:
    """The text the reward model reads for `response` given `prompt`."""
    messages = list(prompt) + list(response)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(f"{ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages)


def encode(tokenizer, prompt: list[dict], response: list[dict], max_length: int) -> list[int]:
    """Token ids of the rendering, cut from the left to at most `max_length` tokens."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    return encode_text(tokenizer, render(tokenizer, prompt, response), max_length, templated)


def encode_text(tokenizer, text: str, max_length: int, templated: bool = False) -> list[int]:
    """Token ids of `text`, cut from the left to at most `max_length` tokens (the end, which a score depends on
    most, is kept). `templated`: the text was written by a chat template, which wrote its own special tokens;
    plain text gets the model's ([CLS] ... [SEP] for BERT), and a leading one is kept when cut."""
    ids = tokenizer(text, add_special_tokens=not templated, truncation=False, verbose=False)["input_ids"]
    if len(ids) <= max_length:
        return ids
    if templated:
        return ids[-max_length:]
    # Keep the leading special tokens (e.g. [CLS]) and drop text from the left.
    head = [i for i in ids[:1] if i in tokenizer.all_special_ids]
    return head + ids[-(max_length - len(head)) :]


def pad_batch(rows: Sequence[list[int]], pad_id: int, device) -> dict:
    """Right-pad token rows into `input_ids` and `attention_mask` tensors."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


# Rows per forward pass when a training micro-batch is cut into parts of similar length (`pad_parts`).
ROWS_PER_PART = 16


def pad_parts(rows: Sequence[list[int]], pad_id: int, device, rows_per_part: int = ROWS_PER_PART) -> dict:
    """The rows sorted by length and padded in parts of `rows_per_part`, plus the permutation that undoes it.

    Why: the completions of one ranking differ a lot in length (a refusal vs a long answer), so padding a
    whole micro-batch to its longest row made the demo's reward model compute 1.78 tokens per real token;
    parts of 16 similar rows compute 1.17. The scores, the loss and the gradient are the same.
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    parts = [
        pad_batch([rows[i] for i in order[start : start + rows_per_part]], pad_id, device)
        for start in range(0, len(order), rows_per_part)
    ]
    restore = torch.empty(len(order), dtype=torch.long)
    restore[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return {"parts": parts, "restore": restore.to(device), "rows": len(rows)}


def forward_scores(model, batch: dict) -> torch.Tensor:
    """Raw head outputs (one float per row), with gradients when called in training mode.

    `batch` is one padded batch (`pad_batch`) or length-sorted parts (`pad_parts`), scored in the rows' order.
    A Llama-layout classifier on right-padded rows runs the lean training forward (`train.lean_forward`):
    only each row's tokens up to the one the score is read at, and the head on that token alone. The token
    is the one transformers pools: the rightmost that is not `pad_token_id`."""
    if "parts" in batch:
        sorted_scores = torch.cat([forward_scores(model, part) for part in batch["parts"]])
        return sorted_scores[batch["restore"]]
    ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if _lean_classifier(model, attention_mask):
        classifier = causal_lm_of(model)  # a LoRA reward model: the classifier inside the peft wrapper
        positions = torch.arange(ids.size(1), device=ids.device)
        last = (positions * (ids != classifier.config.pad_token_id)).argmax(-1)
        select = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        select[torch.arange(ids.size(0), device=ids.device), last] = True
        hidden, head = lean_hidden_at(classifier.model, ids, select), classifier.score
        # A plain head reads its own dtype; peft's trained copy of a LoRA head casts its input itself.
        return head(hidden.to(head.weight.dtype) if type(head) is torch.nn.Linear else hidden)[:, 0]
    return model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits[:, 0]


def _lean_classifier(model, attention_mask: torch.Tensor) -> bool:
    """A Llama/Qwen2 sequence classifier, plain or LoRA (its adapters: `train.lora_path`; its head: a plain
    Linear or peft's trained copy of one), whose rows are right-padded."""
    import transformers

    names = ("LlamaForSequenceClassification", "Qwen2ForSequenceClassification")
    classes = tuple(getattr(transformers, n) for n in names if hasattr(transformers, n))
    classifier = causal_lm_of(model)
    if type(classifier) not in classes or not _plain_head(classifier.score):
        return False
    if classifier.config.pad_token_id is None or not lean_supported(classifier.model):
        return False
    lengths = attention_mask.sum(-1, keepdim=True)
    return bool(
        (attention_mask == (torch.arange(attention_mask.size(1), device=lengths.device) < lengths)).all()
    )


def _plain_head(head: torch.nn.Module) -> bool:
    if type(head) is torch.nn.Linear:
        return True
    copies = getattr(head, "modules_to_save", None)  # peft's ModulesToSaveWrapper (`lora.apply_lora(head=)`)
    original = getattr(head, "original_module", None)
    return (
        copies is not None
        and type(original) is torch.nn.Linear
        and all(type(m) is torch.nn.Linear for m in copies.values())
    )


def score_offset(model) -> float:
    return float(getattr(model.config, OFFSET_KEY, 0.0) or 0.0)


@torch.no_grad()
def score_ids(
    model,
    tokenizer,
    rows: Sequence[list[int]],
    batch_size: int = 16,
    bf16: bool = False,
    features: list | None = None,
    progress: str | None = None,
) -> list[float]:
    """Normalized scores of pre-tokenized rows (batched by similar length; order preserved). `bf16`: on a
    CPU, under a bf16 autocast (`train.precision.Precision.scorer_bf16`: where the CPU multiplies bf16
    natively). `features`: a list to fill with each row's input to the scalar head (fp32, row order), what
    `reward.select`'s posterior reads. `progress`: a label for a rich progress bar advanced per batch (a file
    or pool of tens of thousands of responses takes minutes); the scores are the same with or without it.

    Identical rows are scored once and share the score: a policy samples the same short answer again and
    again (14% of rejection sampling's 16,000 samples in the demo pipeline are repeats of their prompt's
    others), and a row's score does not depend on the rows beside it."""
    where: dict[tuple, int] = {}  # each distinct row -> its index among them, in order of first appearance
    slots = [where.setdefault(tuple(row), len(where)) for row in rows]
    if len(where) < len(rows):
        distinct = list(where)
        seen_features: list | None = None if features is None else []
        scores = score_ids(model, tokenizer, distinct, batch_size, bf16, seen_features, progress)
        if features is not None:
            features[:] = [seen_features[i] for i in slots]
        return [scores[i] for i in slots]
    device = next(model.parameters()).device
    cpu_bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and device.type == "cpu")
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0.0] * len(rows)
    seen: list[torch.Tensor] = []
    offset = score_offset(model)
    with ExitStack() as stack:
        if features is not None:
            features[:] = [None] * len(rows)
            hook = scalar_head(model).register_forward_hook(
                lambda _m, args, _out: seen.append(args[0].float())
            )
            stack.callback(hook.remove)
        advance = None
        if progress is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            bar = stack.enter_context(
                Progress(TextColumn(progress), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            )
            task = bar.add_task(progress, total=len(rows))
            advance = functools.partial(bar.advance, task)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = pad_batch([rows[i] for i in idx], tokenizer.pad_token_id, device)
            with cpu_bf16:
                scores = forward_scores(model, batch)
            for i, s in zip(idx, scores.float().cpu().tolist()):
                out[i] = s - offset
            if features is not None:
                head_in = torch.cat(seen)
                # a decoder's head runs at every position; the score is read at each right-padded row's last token
                if head_in.dim() == 3:
                    last = batch["attention_mask"].sum(-1) - 1
                    head_in = head_in[torch.arange(len(idx), device=head_in.device), last]
                for i, f in zip(idx, head_in.cpu()):
                    features[i] = f
                seen.clear()
            if advance is not None:
                advance(len(idx))
    model.train(was_training)
    return out


def score_conversations(
    model,
    tokenizer,
    items: Sequence[tuple[list[dict], list[dict]]],
    max_length: int,
    batch_size: int = 16,
    bf16: bool = False,
    features: list | None = None,
    progress: str | None = None,
) -> list[float]:
    """Scores of (prompt, response) pairs (`bf16`, `features`, `progress`: as in `score_ids`)."""
    rows = [encode(tokenizer, prompt, response, max_length) for prompt, response in items]
    return score_ids(model, tokenizer, rows, batch_size, bf16, features, progress)


def scalar_head(model) -> torch.nn.Linear:
    """The final Linear layer with one output (Llama `score`, BERT `classifier`, RoBERTa `out_proj`, ...);
    in a LoRA model, its trained copy."""
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not heads:
        raise RlhfkitError("reward model has no Linear layer with one output to use as its scalar head")
    return heads[-1]


def scalar_head_name(model) -> str:
    """The module name of `scalar_head` (what LoRA keeps fully trainable: peft `modules_to_save`)."""
    head = scalar_head(model)
    return next(name for name, m in model.named_modules() if m is head)


@torch.no_grad()
def shift_scores(model, amount: float) -> None:
    """Make every score `amount` lower: in the head's bias when it has one, else in the stored offset."""
    head = scalar_head(model)
    if head.bias is not None:
        head.bias -= amount
    else:
        setattr(model.config, OFFSET_KEY, score_offset(model) + amount)


def default_max_length(model, tokenizer, wanted: int) -> int:
    """`wanted`, capped by the model's position limit and the tokenizer's maximum length."""
    limits = [wanted, getattr(model.config, "max_position_embeddings", wanted) or wanted]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 10**9:
        limits.append(tok_max)
    return min(limits)
