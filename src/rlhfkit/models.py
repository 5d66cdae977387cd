"""Model presets and loading from any source (a Hugging Face folder, a `.gguf` file, a Hub name, a PEFT adapter).

Presets are Llama-style decoder-only transformers (RoPE, RMSNorm, SwiGLU, SDPA attention) built as the
Hugging Face `LlamaForCausalLM` class, so every checkpoint rlhfkit writes loads in `transformers` as is and
every local Hugging Face causal-LM checkpoint can be used where an rlhfkit model is expected.

Sizes are chosen for a 2-core CPU: embeddings are tied (the LM head of a tiny model is a large share of its
parameters and compute) and vocabularies are small (a few thousand tokens).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError, first_line
from rlhfkit.hub import hub_offline, hub_reachable  # the probe shared with dataset sources
from rlhfkit.load_policy import (
    check_remote_code,
    from_pretrained_kwargs,
    is_remote_code_refusal,
    remote_code_error,
)


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    description: str


# Parameter counts below assume a 4,096-token vocabulary (tied embeddings counted once).
PRESETS: dict[str, Preset] = {
    "micro": Preset(32, 2, 4, 64, "~50k params; for tests"),
    "tiny": Preset(128, 4, 4, 352, "~1.3M params; seconds-scale demos"),
    "small": Preset(256, 6, 8, 688, "~5.8M params; the CPU demo default"),
    "medium": Preset(512, 6, 8, 1376, "~21M params; a laptop's patience, or a GPU"),
}


def preset_config(name: str, vocab_size: int, max_seq_len: int, tokenizer=None):
    """A `LlamaConfig` for a preset name, with special-token ids taken from `tokenizer` when given."""
    from transformers import LlamaConfig

    if name not in PRESETS:
        raise RlhfkitError(f"unknown preset '{name}' (choose from: {', '.join(PRESETS)})")
    p = PRESETS[name]
    ids = {}
    if tokenizer is not None:
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_heads,
        max_position_embeddings=max_seq_len,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.02,
        **ids,
    )


def build_model(name: str, vocab_size: int, max_seq_len: int, tokenizer=None, seed: int = 0):
    """A freshly initialized causal LM for a preset (deterministic for a given seed)."""
    import torch
    from transformers import LlamaForCausalLM

    config = preset_config(name, vocab_size, max_seq_len, tokenizer)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def adapter_base(path: str | Path) -> str | None:
    """The base model source of a PEFT adapter folder (one with `adapter_config.json` and no full weights),
    else None. A relative base path is read from the working directory, else from the adapter folder."""
    p = Path(path)
    config = p / ADAPTER_CONFIG
    if not (p.is_dir() and config.is_file()) or any((p / name).exists() for name in WEIGHT_FILES):
        return None
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        raise RlhfkitError(f"{config}: not a valid PEFT adapter config (expected a JSON object)") from None
    if not isinstance(base, str) or not base:
        raise RlhfkitError(
            f"{config}: field 'base_model_name_or_path' is missing; cannot find the base model"
        )
    if not Path(base).is_absolute() and not Path(base).exists() and (p / base).exists():
        return str(p / base)
    return base


def source_kwargs(source: str | Path, what: str = "model") -> tuple[str, dict]:
    """(name or folder, extra `from_pretrained` kwargs) for a model source, or a clear error.

    A source is a local Hugging Face folder, a `.gguf` file (transformers' GGUF loader dequantizes it), or a
    Hub name such as `HuggingFaceTB/SmolLM2-135M-Instruct` (from the local cache, or downloaded when the Hub is
    reachable; when it is not, `local_files_only` is set so nothing waits on network retries).
    """
    p = Path(source)
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), {"gguf_file": p.name}
    if p.is_dir():
        if what == "model" and not (p / "config.json").exists():
            raise RlhfkitError(
                f"{p}: not a model checkpoint (no config.json); expected a Hugging Face model folder"
            )
        if what == "model" and not any((p / name).exists() for name in WEIGHT_FILES):
            raise RlhfkitError(
                f"{p}: has a config.json but no weights ({', '.join(WEIGHT_FILES)}): an incomplete save, as "
                "from a run killed while saving; rerun the stage that wrote it"
            )
        return str(p), {}
    if p.exists():
        raise RlhfkitError(f"{p}: expected a Hugging Face model folder or a .gguf file")
    if (
        str(source).startswith((".", "/", "~"))
        or str(source).count("/") > 1
        or not HUB_NAME.match(str(source))
    ):
        raise RlhfkitError(f"{p}: {what} folder not found")
    return str(source), hub_kwargs(str(source))


def hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "tokenizer_config.json")
    )


def hub_kwargs(name: str) -> dict:
    """`from_pretrained` kwargs for a Hub name: `local_files_only` when the Hub cannot be reached (offline mode
    or a failed probe) and the model is cached; a clear error at once when it is not cached."""
    if not hub_offline() and hub_reachable():
        return {}
    if not hub_cached(name):
        raise hub_error(name, ConnectionError("offline"))
    return {"local_files_only": True}


def hub_error(source: str, exc: Exception) -> RlhfkitError:
    """The error for a Hub name that could not be loaded: offline, not cached, or not a model."""
    from huggingface_hub.constants import HF_HUB_CACHE

    first = first_line(exc)
    if hub_offline() or "connect" in str(exc).lower() or "offline" in str(exc).lower():
        return RlhfkitError(
            f"{source}: not a local folder, and the Hugging Face Hub cannot be reached from here; it is not "
            f"in the cache ({HF_HUB_CACHE}) either. Download it where the Hub is reachable "
            f"(`hf download {source}`) and copy the cache, or pass a local folder or .gguf file"
        )
    return RlhfkitError(f"{source}: could not load from the Hugging Face Hub ({first})")


def check_source(source: str | Path) -> None:
    """Raise the clear error `load_causal_lm` would for a source that cannot exist (cheap: loads nothing)."""
    base = adapter_base(source)
    if base is None:
        source_kwargs(source)
        return
    try:
        check_source(base)
    except RlhfkitError as exc:
        raise RlhfkitError(f"{source}: the adapter's base model: {exc}") from None


def load_causal_lm(path: str | Path, dtype=None, device=None):
    """Load a causal LM in `dtype` (default float32) on `device` (default CPU) from a local Hugging Face folder
    (an rlhfkit stage output or a user's), a `.gguf` file, a Hub name, or a PEFT adapter folder.

    An adapter is applied to its base (`base_model_name_or_path` in `adapter_config.json`, itself any source)
    and merged: the result is a plain model, which the fast generation engine can run and callers can treat
    like any other. Training code that wants the adapter kept separate loads it with `peft` itself."""
    import torch
    from transformers import AutoModelForCausalLM

    base = adapter_base(path)
    if base is not None:
        return _merged_adapter(path, base, dtype, device)
    name, extra = source_kwargs(path)
    if "gguf_file" in extra:
        from transformers import GgufConfig

        # Dequantized into plain tensors: a model like any other (trainable, savable with save_pretrained).
        extra = {**extra, "quantization_config": GgufConfig(dequantize=True)}
    if Path(name).is_dir():
        check_remote_code(name)
    extra = {**extra, **from_pretrained_kwargs()}
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                name, dtype=dtype or torch.float32, attn_implementation="sdpa", **extra
            )
        except ValueError as exc:
            if "scaled_dot_product_attention" not in str(exc):
                raise
            # An architecture without an SDPA kernel (Gemma-2's soft-capped attention): its own default.
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32, **extra)
    except load_errors(extra) as exc:
        raise load_error(path, name, exc, "a causal LM") from None
    if "gguf_file" in extra:
        _set_name(model, path)  # so an adapter trained on it records the .gguf file as its base
    return model if device is None else model.to(device)


def load_error(path, name: str, exc: BaseException, what: str) -> RlhfkitError:
    """The one-line error for a failed `from_pretrained` of `name` (the source `path` resolved)."""
    if is_remote_code_refusal(exc):
        return remote_code_error(path)
    if not Path(name).exists():
        return hub_error(str(path), exc)
    return RlhfkitError(f"{path}: could not load as {what} ({first_line(exc)})")


def load_errors(extra: dict) -> tuple[type[BaseException], ...]:
    """What a failed `from_pretrained` raises: the usual few, or anything for a GGUF file, whose reader fails
    on a damaged or foreign file with whatever its parsing hits (struct, numpy, index errors)."""
    if "gguf_file" in extra:
        return (Exception,)
    return (OSError, ValueError, KeyError, TypeError, AttributeError)


def _merged_adapter(path: str | Path, base: str, dtype, device):
    from peft import PeftModel

    check_source(path)
    model = load_causal_lm(base, dtype=dtype, device=device)
    try:
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RlhfkitError(
            f"{path}: could not apply the adapter to its base {base} ({first_line(exc)})"
        ) from None
    _set_name(model, path)  # an adapter trained on top records this adapter (base + it) as its base
    return model


def _set_name(model, source: str | Path) -> None:
    model.name_or_path = str(source)
    model.config.name_or_path = str(source)


def count_parameters(model, include_embeddings: bool = True) -> int:
    """Unique parameters (tied weights counted once)."""
    seen = {}
    for name, param in model.named_parameters():
        seen.setdefault(param.data_ptr(), (name, param.numel()))
    total = sum(n for _, n in seen.values())
    if not include_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total
