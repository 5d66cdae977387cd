"""Model folders written so that a killed save never looks like a model (`saving_into`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# What makes a folder look like a model to a loader: moved in last, after every weight file is in place.
LOADER_ENTRY_FILES = ("config.json", "adapter_config.json")


@contextlib.contextmanager
def saving_into(out_dir: str | Path) -> Iterator[Path]:
    """Save a model into a temporary folder, then move its files into `out_dir`, `config.json` last.

    Why: `save_pretrained` writes `config.json` first and the weights after. A run killed in between left a
    folder that every loader took for a model and then failed on ("not a tokenizer folder"). Each move is an
    atomic rename on the same filesystem, so a killed save leaves either no `config.json` (the stage is not
    done and reruns) or a complete model. A failure inside the block leaves `out_dir` as it was."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        files = sorted(tmp.rglob("*"), key=lambda f: f.name in LOADER_ENTRY_FILES)
        for f in files:
            if f.is_dir():
                continue
            target = out / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
