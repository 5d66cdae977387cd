"""``build_world``: write the demo world's files into a folder, deterministically and in seconds.

Files: ``corpus.jsonl`` (pretraining documents, ``{"text": ...}``), ``sft.jsonl`` and ``sft_val.jsonl``
(demonstration chats), ``prompts.jsonl`` (RL / sampling prompts), ``eval_prompts.jsonl`` (held-out evaluation
prompts) and ``world.json`` (seed, size, counts per file and category, imperfection rates, a fingerprint).
Every random choice comes from a ``random.Random`` seeded by ``(seed, stream name)`` and nothing depends on
time or dict order, so the same seed writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhfkit.world.chats import CATEGORY_WEIGHTS, IMPERFECTION_RATES, demonstrations
from rlhfkit.world.corpus import documents
from rlhfkit.world.files import sha256_of, stream_rng, write_rows
from rlhfkit.world.knowledge import CATALOGUE_SEED, load_knowledge
from rlhfkit.world.prompts import prompt_records

WORLD_VERSION = 1


@dataclass(frozen=True)
class WorldSize:
    """How much to generate. ``corpus_bytes`` is the text budget of the pretraining corpus."""

    corpus_bytes: int
    sft: int
    sft_val: int
    prompts: int
    eval_prompts: int


SIZES = {
    "small": WorldSize(corpus_bytes=200_000, sft=600, sft_val=60, prompts=200, eval_prompts=80),
    "default": WorldSize(corpus_bytes=2_500_000, sft=10_000, sft_val=500, prompts=2_000, eval_prompts=500),
    "large": WorldSize(corpus_bytes=15_000_000, sft=30_000, sft_val=1_500, prompts=5_000, eval_prompts=1_000),
}


@dataclass
class WorldConfig:
    """`rlhfkit world build`: the demo world's files in one folder."""

    out: str = "runs/demo/world"  # output folder
    seed: int = 0  # random seed; same seed, same bytes
    size: str = "default"  # small: tests (~200 KB corpus); default: ~2.5 MB corpus, 10k chats; large: ~15 MB
    verifiable: int = 0  # also write N verifiable RL prompts, N/4 held-out ones and N worked SFT chats
    # (verifiable_*.jsonl, verifiable.json); the other files stay the same bytes; 0: none
    tools: bool = False  # with --verifiable: also N SFT chats that solve them with the world's tools
    # (lookup, calculator): verifiable_tools_sft.jsonl
    tool_practice: float = 0.0  # with --tools: this share of the tool chats asks about made-up catalogues'
    # products and towns (knowledge.practice_knowledge): names seen once, so the model learns to copy them


def run(cfg: WorldConfig) -> Path:
    """Build the world into `cfg.out`, print what it holds; return the folder."""
    import time

    from rich.console import Console
    from rich.table import Table

    from rlhfkit.errors import RlhfkitError

    if cfg.size not in SIZES:
        raise RlhfkitError(f"--size: expected one of {', '.join(SIZES)}, got '{cfg.size}'")
    if cfg.verifiable < 0:
        raise RlhfkitError(f"--verifiable: expected an integer >= 0, got {cfg.verifiable}")
    if cfg.tools and not cfg.verifiable:
        raise RlhfkitError(
            "--tools writes tool-using demonstrations of the verifiable tasks: give --verifiable N"
        )
    if not 0 <= cfg.tool_practice <= 1:
        raise RlhfkitError(f"--tool-practice: expected a share from 0 to 1, got {cfg.tool_practice}")
    start = time.perf_counter()
    info = build_world(cfg.out, seed=cfg.seed, size=cfg.size)
    if cfg.verifiable:
        from rlhfkit.world.verifiable_build import build_verifiable

        info["files"].update(
            build_verifiable(cfg.out, cfg.seed, cfg.verifiable, cfg.tools, cfg.tool_practice)["files"]
        )
    table = Table(title=f"demo world (seed {cfg.seed}, size {cfg.size}) in {cfg.out}")
    table.add_column("file")
    table.add_column("records", justify="right")
    table.add_column("per category")
    for name, entry in info["files"].items():
        cats = ", ".join(f"{c} {n}" for c, n in (entry.get("categories") or entry.get("kinds", {})).items())
        if name == "corpus.jsonl":
            cats = f"{entry['text_bytes'] / 1e6:.2f} MB of text"
        table.add_row(name, str(entry["count"]), cats)
    console = Console()
    console.print(table)
    console.print(f"fingerprint {info['fingerprint'][:16]}  ({time.perf_counter() - start:.1f} s)")
    return Path(cfg.out)


def build_world(out_dir: str | Path, seed: int = 0, size: str = "default") -> dict:
    """Generate the world into ``out_dir`` and return the content of its ``world.json``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    spec = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kb = load_knowledge()

    def rng(stream: str) -> random.Random:
        return stream_rng(seed, stream)

    corpus = [{"text": t} for t in documents(kb, rng("corpus"), spec.corpus_bytes)]
    files = {
        "corpus.jsonl": corpus,
        "sft.jsonl": demonstrations(spec.sft, rng("sft"), "sft"),
        "sft_val.jsonl": demonstrations(spec.sft_val, rng("sft_val"), "sft-val"),
        "prompts.jsonl": prompt_records(spec.prompts, rng("prompts"), "train", "prompt", allow_repeats=True),
        "eval_prompts.jsonl": prompt_records(spec.eval_prompts, rng("eval"), "eval", "eval"),
    }
    info: dict = {
        "version": WORLD_VERSION,
        "seed": seed,
        "size": size,
        "spec": asdict(spec),
        "catalogue_seed": CATALOGUE_SEED,
        "files": {},
    }
    for name, rows in files.items():
        path = out / name
        write_rows(path, rows)
        entry = {"count": len(rows), "bytes": path.stat().st_size, "sha256": sha256_of(path)}
        if name == "corpus.jsonl":
            entry["text_bytes"] = sum(len(r["text"].encode("utf-8")) for r in rows)
        else:
            entry["categories"] = dict(sorted(Counter(r["category"] for r in rows).items()))
        if name.startswith("sft"):
            entry["quality"] = dict(sorted(Counter(r["quality"] for r in rows).items()))
        info["files"][name] = entry
    info["sft_category_weights"] = CATEGORY_WEIGHTS
    info["imperfection_rates"] = {c: dict(r) for c, r in IMPERFECTION_RATES.items()}
    info["fingerprint"] = hashlib.sha256(
        "".join(info["files"][n]["sha256"] for n in sorted(info["files"])).encode()
    ).hexdigest()
    (out / "world.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info
