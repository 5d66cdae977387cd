"""Model presets and loading.

Presets are Llama-style decoder-only transformers (RoPE, RMSNorm, SwiGLU, SDPA attention) built as the
Hugging Face `LlamaForCausalLM` class, so every checkpoint rlhfkit writes loads in `transformers` as is and
every local Hugging Face causal-LM checkpoint can be used where an rlhfkit model is expected.

Sizes are chosen for a 2-core CPU: embeddings are tied (the LM head of a tiny model is a large share of its
parameters and compute) and vocabularies are small (a few thousand tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError


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


def is_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").exists()


HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def source_kwargs(source: str | Path, what: str = "model") -> tuple[str, dict]:
    """(name or folder, extra `from_pretrained` kwargs) for a model source, or a clear error.

    A source is a local Hugging Face folder, a `.gguf` file (transformers' GGUF loader dequantizes it), or a
    Hub name such as `HuggingFaceTB/SmolLM2-135M-Instruct` (from the local cache, or downloaded when the Hub is
    reachable).
    """
    p = Path(source)
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), {"gguf_file": p.name}
    if p.is_dir():
        if what == "model" and not (p / "config.json").exists():
            raise RlhfkitError(
                f"{p}: not a model checkpoint (no config.json); expected a Hugging Face model folder"
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
    return str(source), {}


def hub_error(source: str, exc: Exception) -> RlhfkitError:
    """The error for a Hub name that could not be loaded: offline, not cached, or not a model."""
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if HF_HUB_OFFLINE or "connect" in str(exc).lower() or "offline" in str(exc).lower():
        return RlhfkitError(
            f"{source}: not a local folder, and the Hugging Face Hub cannot be reached from here; it is not "
            f"in the cache ({HF_HUB_CACHE}) either. Download it where the Hub is reachable "
            f"(`hf download {source}`) and copy the cache, or pass a local folder or .gguf file"
        )
    return RlhfkitError(f"{source}: could not load from the Hugging Face Hub ({first})")


def load_causal_lm(path: str | Path, dtype=None, device=None):
    """Load a causal LM from a local Hugging Face folder (an rlhfkit stage output or a user's), a `.gguf` file
    or a Hub name, in `dtype` (default float32) on `device` (default CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    name, extra = source_kwargs(path)
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
    except (OSError, ValueError, KeyError) as exc:
        if not Path(name).exists():
            raise hub_error(str(path), exc) from None
        raise RlhfkitError(f"{path}: could not load as a causal LM ({str(exc).splitlines()[0]})") from None
    return model if device is None else model.to(device)


def count_parameters(model, include_embeddings: bool = True) -> int:
    """Unique parameters (tied weights counted once)."""
    seen = {}
    for name, param in model.named_parameters():
        seen.setdefault(param.data_ptr(), (name, param.numel()))
    total = sum(n for _, n in seen.values())
    if not include_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total
