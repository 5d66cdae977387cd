"""Logits at chosen positions, exactly as the model's own forward computes them, for every architecture.

Training code wants log-probs at a few positions (SFT: assistant tokens; PPO: response tokens). Running the
LM head only there is much cheaper than the full forward's `[batch, length, vocab]` logits, but it is only
*exact* when the model's logits are nothing more than `lm_head(body(x))`. Many families do more: Gemma-2/3
soft-cap the final logits, Cohere multiplies them by `logit_scale`, Granite divides by `logits_scaling`.
`plain_lm_head` is the one predicate that decides: a fixed list of classes whose forward is known to be
`lm_head(model(x).last_hidden_state)`, with no such option set. Everything else goes through the model's own
forward (trimmed with `logits_to_keep` where the model takes it), so no architecture is computed wrongly.
"""

from __future__ import annotations

import inspect

import torch

from rlhfkit.train.fast_linear import linear
from rlhfkit.train.head_loss import linear_token_logprobs, logprobs_of
from rlhfkit.train.lean_forward import lean_hidden_at, lean_supported

# Classes whose causal-LM forward is exactly `lm_head(self.model(...).last_hidden_state)`.
PLAIN_HEAD_CLASSES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
# Config options that change logits after the head in some family; any of them set disables the fast path.
LOGIT_OPTIONS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def causal_lm_of(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a peft wrapper (LoRA layers stay injected), else `model` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def plain_lm_head(model: torch.nn.Module) -> bool:
    """Whether `lm_head(body(x))` on selected positions equals the model's own logits there.

    False for a DistributedDataParallel wrapper too: its gradient hooks need its own forward.
    """
    if hasattr(model, "module"):
        return False
    lm = causal_lm_of(model)
    import transformers

    classes = tuple(getattr(transformers, name) for name in PLAIN_HEAD_CLASSES if hasattr(transformers, name))
    if type(lm) not in classes:  # exact classes: a subclass may override forward
        return False
    config = lm.config
    return all(getattr(config, name, None) in (None, 1.0) for name in LOGIT_OPTIONS)


def body_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body (Llama's `model`, GPT-NeoX's `gpt_neox`, ...) of a causal LM, classifier or peft
    wrapper of either: what returns `last_hidden_state`."""
    return causal_lm_of(model).base_model


def hidden_at(body: torch.nn.Module, input_ids: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Final hidden states [N, H] of a causal LM's body at the N positions where `select` [B, L] is True, in
    row-major order (right-padded rows). Llama-layout bodies take the lean forward: only the needed tokens,
    no padding in the matmuls."""
    if lean_supported(body):
        return lean_hidden_at(body, input_ids, select)
    return body(input_ids=input_ids, use_cache=False).last_hidden_state[select]


def logits_at(
    model: torch.nn.Module, input_ids: torch.Tensor, select: torch.Tensor, with_hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits [N, V], final hidden states [N, H] or None) at the N positions where `select` [B, L] is True,
    in row-major order. Right-padded rows need no attention mask (causal attention never sees later pads)."""
    if plain_lm_head(model):
        lm = causal_lm_of(model)
        hidden = hidden_at(lm.model, input_ids, select)
        head = lm.lm_head
        return linear(hidden, head.weight, head.bias), hidden if with_hidden else None
    kwargs: dict = {"use_cache": False}
    if with_hidden:
        kwargs["output_hidden_states"] = True
    # Only the last `keep` positions need logits: from the first selected column on.
    columns = select.any(0).nonzero()
    keep = input_ids.size(1) - int(columns[0]) if columns.numel() else 1
    if _takes_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    out = model(input_ids=input_ids, **kwargs)
    hidden = out.hidden_states[-1][select] if with_hidden else None
    return out.logits[:, -keep:][select[:, -keep:]], hidden


def label_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, select: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """[N] log-probs of `labels` [N] (real tokens) at the N positions where `select` [B, L] is True, in
    row-major order: a plain head fused with the log-softmax (`train.head_loss`: no `[N, vocab]` temporaries),
    any other through the model's own logits (`logits_at`)."""
    if plain_lm_head(model):
        lm = causal_lm_of(model)
        return linear_token_logprobs(hidden_at(lm.model, input_ids, select), lm.lm_head, labels)
    return logprobs_of(logits_at(model, input_ids, select)[0], labels)


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(causal_lm_of(model).forward).parameters
