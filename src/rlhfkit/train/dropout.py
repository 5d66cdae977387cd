"""Dropout off while training reward models, PRMs and DPO (TRL's reward and DPO trainers: `disable_dropout=True`).

Why, for a reward model: each response of a ranking goes through its own dropout masks, so the Bradley-Terry
loss compares two noisy scores, while every use of the trained model (scoring, best-of-n, PPO's reward)
reads it without dropout. Why, for DPO: the reference log-probs are computed once in eval mode, so with
dropout the policy's first log-ratios are not zero but noise. And on a CPU the masks are costly: drawing
them (`bernoulli_`) took 24% of the bundled MiniLM reward model's training step (AMD EPYC Zen 4, 2 cores;
docs/methods.md, "Reward models train without dropout").

Decoder presets (Llama, Qwen2, ...) have no dropout, so this changes nothing for them; encoders (BERT,
MiniLM: 0.1) and GPT-2-style models do. `--dropout` keeps the model's own. LoRA adapters' own dropout
(`--lora-dropout`, 0 by default) is the user's explicit choice and is left as it is.
"""

from __future__ import annotations

import torch


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability inside `model` to 0; return how many were above 0.

    Covers `nn.Dropout` modules (BERT, GPT-2, the classifier heads) and the float `attention_dropout` that
    Hugging Face attention modules (Llama, Qwen2, Gemma) pass to their attention kernel while training, but
    not peft's `lora_dropout` modules. The saved config is left as it is: a model trained further elsewhere
    gets its own dropout back."""
    changed = 0
    for name, module in model.named_modules():
        if "lora_dropout" in name.split("."):
            continue
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            module.p = 0.0
            changed += 1
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate > 0:
            module.attention_dropout = 0.0
            changed += 1
    return changed
