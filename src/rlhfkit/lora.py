"""LoRA through `peft` for the training stages: options, default targets, wrapping, adapter inputs and outputs.

`--lora-r N` (N > 0) freezes the model and trains rank-N adapters on its linear layers instead (plus, for a
reward model or critic, the whole one-output score head). By default the adapters go on every linear layer
inside the transformer blocks, found by walking the model (the ModuleList of `num_hidden_layers` blocks), so
Llama, Qwen2, Gemma-2, Mistral (`q_proj` ... `down_proj`), GPT-NeoX (`query_key_value`, `dense*`) and GPT-2
(`c_attn`, `c_proj`, `c_fc`) all work without a table of names. `--lora-targets` picks module names by hand;
a name that matches no module is an error.

Outputs are peft adapter folders (`adapter_config.json` + `adapter_model.safetensors`, with the tokenizer,
generation config and rlhfkit.json): `peft.AutoPeftModelForCausalLM.from_pretrained(DIR)` loads them, and
`adapter_config.json`'s `base_model_name_or_path` is the absolute path (or Hub name) of the base model.

An adapter folder as a stage's *input* (e.g. `ppo --policy` on an SFT LoRA output) is merged into its base
and the stage trains a new adapter on top (`resolve_base`). That keeps PPO's and DPO's reference exact: the
reference is the SFT model, which is what the policy is with its (new) adapters disabled. The merged base is
saved once to `<out>/base/` so the new adapter has a real base folder to point to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhfkit.errors import RlhfkitError, first_line


@dataclass
class LoraOptions:
    lora_r: int = 0  # LoRA rank: train rank-r adapters (peft) on the frozen model; 0: train every weight
    lora_alpha: float = 16.0  # LoRA scaling: adapter outputs are multiplied by lora_alpha / lora_r
    lora_dropout: float = (
        0.0  # dropout on the adapters' input (0 keeps PPO's rollout and update forwards equal)
    )
    lora_targets: list[str] = field(default_factory=list)  # module names to adapt (e.g. q_proj v_proj);
    # default: every linear layer inside the transformer blocks

    @property
    def enabled(self) -> bool:
        if self.lora_r < 0:
            raise RlhfkitError(f"--lora-r: expected an integer >= 0 (0: no LoRA), got {self.lora_r}")
        return self.lora_r > 0


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter folder (adapter_config.json, no full weights): `models.adapter_base` decides."""
    from rlhfkit.models import adapter_base

    return adapter_base(path) is not None


def is_peft(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config")


def _blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    depth = getattr(model.config, "num_hidden_layers", None)
    return next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth), None)


def _is_linear(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's transposed linear layer

    return isinstance(module, torch.nn.Linear | Conv1D)


def default_targets(model: torch.nn.Module) -> list[str]:
    """Names (last path component) of every linear layer inside the transformer blocks, in model order."""
    blocks = _blocks(model)
    if blocks is None:
        raise RlhfkitError(
            f"--lora-targets: could not find the transformer blocks of {type(model).__name__}; "
            "name the modules to adapt with --lora-targets"
        )
    names = [name.rsplit(".", 1)[-1] for name, m in blocks.named_modules() if _is_linear(m)]
    return list(dict.fromkeys(names))


def check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Every target must name at least one module (peft's rule: the full name, or its last components)."""
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise RlhfkitError(
            f"--lora-targets: {', '.join(missing)} match no module of {type(model).__name__} "
            f"(its block linear layers: {', '.join(default_targets(model))})"
        )


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of storing them (HF, non-reentrant,
    so frozen inputs under LoRA need no `enable_input_require_grads`)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RlhfkitError(f"--gradient-checkpointing: {type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x's name
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def apply_lora(model: torch.nn.Module, opts: LoraOptions, head: str | None = None) -> torch.nn.Module:
    """Wrap `model` in a peft LoRA model (trainable adapters, frozen base). `head`: the module name of a
    reward model's or critic's score head, trained whole (peft `modules_to_save`)."""
    from peft import LoraConfig, TaskType, get_peft_model

    if not 0 <= opts.lora_dropout < 1:
        raise RlhfkitError(f"--lora-dropout: expected a number in [0, 1), got {opts.lora_dropout}")
    targets = list(opts.lora_targets) or default_targets(model)
    check_targets(model, targets)
    config = LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.lora_dropout,
        target_modules=targets,
        task_type=TaskType.SEQ_CLS if head else TaskType.CAUSAL_LM,
        modules_to_save=[head] if head else None,
    )
    model = get_peft_model(model, config)
    if head:
        # The head trains whole: fp32 master weights even over a bf16 base, fed in its own dtype.
        trained = model.get_base_model().get_submodule(head).modules_to_save["default"]
        trained.float().register_forward_pre_hook(lambda m, args: (args[0].to(m.weight.dtype), *args[1:]))
    return model


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_merged_classifier(path: str | Path, **kwargs) -> torch.nn.Module:
    """A reward-model adapter folder as a plain sequence classifier: its base loaded with a score head and the
    adapters (and the trained head) merged in. Causal LMs load through `models.load_causal_lm`, which merges
    adapters itself."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    from rlhfkit.load_policy import check_remote_code, from_pretrained_kwargs
    from rlhfkit.models import adapter_base, check_source

    check_source(path)
    base = adapter_base(path)
    if Path(base).is_dir():
        check_remote_code(base)
    verbosity = logging.get_verbosity()
    # The base has no score head: transformers reports it "missing", but the adapter brings it.
    logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs, **from_pretrained_kwargs())
        return PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RlhfkitError(f"{path}: could not load the adapter on {base} ({first_line(exc)})") from None
    finally:
        logging.set_verbosity(verbosity)


def resolve_base(source: str, out: str | Path) -> str:
    """The model a stage starts from: `source` itself, or for an adapter folder its merged model, saved once
    as `<out>/base/` (with the tokenizer) so the stage's own adapter has a base on disk."""
    if not is_adapter_dir(source):
        return source
    from rlhfkit.models import adapter_base, load_causal_lm
    from rlhfkit.saving import saving_into
    from rlhfkit.tokenizer import load_tokenizer

    target = Path(out) / "base"
    if not (target / "config.json").exists():
        print(f"{source}: LoRA adapter; merging it into {adapter_base(source)} -> {target}")
        model = load_causal_lm(source, dtype=torch.float32)
        with saving_into(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(source).save_pretrained(tmp)
    return str(target)


def base_name(source: str) -> str:
    """How an adapter config names its base: an absolute path for a local folder, else the Hub name."""
    p = Path(source)
    return str(p.resolve()) if p.exists() else source


def save_adapter(model: torch.nn.Module, out: str | Path, base: str) -> None:
    """`save_pretrained` of a peft model's adapters (and trained head), recording `base` as their base."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = base_name(base)
    model.save_pretrained(str(out), safe_serialization=True)


def load_trainable_lm(
    source: str, out: str | Path, device, dtype: str, checkpointing: bool, lora: LoraOptions
):
    """(causal LM to train on `device`, the base source its adapters will name): an adapter folder is merged
    first (`resolve_base`); fp32 weights unless LoRA freezes them (`train.precision`); then gradient
    checkpointing and LoRA adapters as asked."""
    from rlhfkit.models import load_causal_lm
    from rlhfkit.train.precision import Precision

    base = resolve_base(source, out)
    precision = Precision.of(device, dtype)
    model = load_causal_lm(base, dtype=precision.trainable_load_dtype(lora.enabled)).to(device)
    if checkpointing:
        enable_gradient_checkpointing(model)
    if lora.enabled:
        model = apply_lora(model, lora)
    return model, base


def load_frozen_lm(source: str, device, dtype: torch.dtype) -> torch.nn.Module:
    """A causal LM that is never trained (a reference), in `dtype`, eval mode, no gradients; an adapter folder
    is merged in memory (`load_causal_lm` does it)."""
    from rlhfkit.models import load_causal_lm

    return load_causal_lm(source, dtype=dtype).to(device).eval().requires_grad_(False)


def generation_backend(model: torch.nn.Module) -> str:
    """The generation engine's backend for `model`: "hf" for a LoRA model (the lean Llama decoder reads the
    base weights and would miss the adapters), else "auto"."""
    return "hf" if is_peft(model) else "auto"
