"""Turn any model source into a plain Hugging Face folder (weights, tokenizer, generation_config, rlhfkit.json).

Why a folder: a `.gguf` file is dequantized on every load (~15 s for SmolLM2-135M), a Hub name needs the network
or its cache, and an adapter needs its base and a merge. Once written, the folder loads in a second in every
stage and in plain `transformers` (`AutoModelForCausalLM.from_pretrained(DIR)`), with no rlhfkit involved.

The saved `generation_config` is the source's own, with the chat template's end-of-turn token added to its eos
ids when missing (GGUF metadata names one eos only), so every later stage and `transformers`' `generate` stop at
the end of a turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError


@dataclass
class ImportConfig:
    """`rlhfkit model import`: a model source saved as a plain Hugging Face folder."""

    source: str = (
        ""  # a .gguf file, a Hub name (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or any model folder
    )
    out: str = ""  # folder to write
    dtype: str = "float32"  # dtype of the saved weights: float32, bfloat16 or float16 (a GGUF is dequantized)


@dataclass
class MergeConfig:
    """`rlhfkit model merge`: a PEFT adapter merged into its base, saved as one plain folder."""

    adapter: str = ""  # PEFT adapter folder (adapter_config.json names its base)
    out: str = ""  # folder to write
    dtype: str = "float32"  # dtype of the merged weights: float32, bfloat16 or float16


def import_model(cfg: ImportConfig) -> Path:
    return _save_plain(cfg.source, cfg.out, cfg.dtype, stage="import")


def merge_adapter(cfg: MergeConfig) -> Path:
    from rlhfkit.models import adapter_base

    if adapter_base(cfg.adapter) is None:
        raise RlhfkitError(f"--adapter {cfg.adapter}: not a PEFT adapter folder (no adapter_config.json)")
    return _save_plain(cfg.adapter, cfg.out, cfg.dtype, stage="merge")


def _save_plain(source: str, out_dir: str, dtype: str, stage: str) -> Path:
    import torch

    from rlhfkit.artifacts import write_manifest
    from rlhfkit.device import pick_dtype
    from rlhfkit.generation.turns import end_of_turn_ids, model_eos_ids
    from rlhfkit.models import load_causal_lm
    from rlhfkit.saving import saving_into
    from rlhfkit.tokenizer import load_tokenizer

    if not source or not out_dir:
        raise RlhfkitError(f"model {stage}: expected a source and --out DIR")
    out = Path(out_dir)
    if Path(source).exists() and out.resolve() == Path(source).resolve():
        raise RlhfkitError(f"--out {out}: is the source itself; choose another folder")
    torch_dtype = pick_dtype(dtype, torch.device("cpu"))
    tokenizer = load_tokenizer(source)
    model = load_causal_lm(source, dtype=torch_dtype).eval()
    generation = model.generation_config
    eos = list(dict.fromkeys([*model_eos_ids(model), *end_of_turn_ids(tokenizer)]))
    generation.eos_token_id = eos[0] if len(eos) == 1 else eos
    if generation.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    with saving_into(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        generation.save_pretrained(tmp)
    write_manifest(
        out,
        stage=stage,
        config={"source": str(source), "dtype": str(torch_dtype).removeprefix("torch.")},
        seed=0,
        parent=str(source),
        extra={"architecture": type(model).__name__, "eos_token_ids": eos},
    )
    return out
