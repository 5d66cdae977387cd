"""What every stage writes next to its Hugging Face checkpoint: `rlhfkit.json` (provenance and results)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from rlhfkit.saving import saving_into

MANIFEST = "rlhfkit.json"


def write_manifest(
    out_dir: str | Path,
    *,
    stage: str,
    config: Any,
    seed: int,
    parent: str | None = None,
    data_fingerprint: str | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Record stage, parent artifact, config, seed, data fingerprint and final metrics of an artifact."""
    import torch

    from rlhfkit import __version__

    cfg = asdict(config) if is_dataclass(config) else dict(config)
    record = {
        "stage": stage,
        "parent": parent,
        "config": _jsonable(cfg),
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "metrics": _jsonable(metrics or {}),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"rlhfkit": __version__, "torch": torch.__version__, "python": platform.python_version()},
        **(extra or {}),
    }
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def read_manifest(model_dir: str | Path) -> dict:
    path = Path(model_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def save_hf_checkpoint(
    model, tokenizer, out_dir: str | Path, eos_token_ids: list[int] | None = None, base: str | None = None
) -> None:
    """`save_pretrained` for model, tokenizer and generation config.

    A peft (LoRA) model saves only its adapters, recording `base` (the folder or Hub name of the model they
    adapt) in `adapter_config.json`. The generation config is the source model's own (its sampling defaults
    and every eos id it lists are kept), with the stage's end-of-turn ids added first.
    """
    from rlhfkit.lora import is_peft, save_adapter

    if is_peft(model) and base is None:
        raise ValueError("saving a LoRA model needs the path of its base model")
    with saving_into(out_dir) as tmp:
        if is_peft(model):
            save_adapter(model, tmp, base)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            stage_generation_config(model, tokenizer, eos_token_ids).save_pretrained(tmp)


def stage_generation_config(model, tokenizer, eos_token_ids: list[int] | None = None):
    """The source model's generation config plus the stage's stop ids (first) and any missing special ids."""
    import copy

    from transformers import GenerationConfig

    from rlhfkit.train.logits import causal_lm_of

    source = getattr(causal_lm_of(model), "generation_config", None)
    gen = copy.deepcopy(source) if source is not None else GenerationConfig()
    old = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    ids = [*(eos_token_ids or [tokenizer.eos_token_id]), *old]
    gen.eos_token_id = list(dict.fromkeys(int(i) for i in ids if i is not None))
    if gen.bos_token_id is None:
        gen.bos_token_id = tokenizer.bos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return gen


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)
