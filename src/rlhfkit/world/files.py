"""How the world's files are written: one random stream per file, JSONL bytes that never depend on the platform,
and the sha256 that `world.json` and `verifiable.json` record."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path


def stream_rng(seed: int, stream: str) -> random.Random:
    """The random stream of one file: a pure function of (seed, stream name)."""
    return random.Random(f"rlhfkit-world:{seed}:{stream}")


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
