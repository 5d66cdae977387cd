"""`world build --verifiable N`: the verifiable tasks' files, next to the world's and without touching them.

Files: `verifiable_train.jsonl` (N RL prompts over the train templates and entities), `verifiable_eval.jsonl`
(N / 4 held-out prompts, at least one), `verifiable_sft.jsonl` (N worked demonstrations, imperfect at the
rates in `verifiable_demos.VERIFIABLE_FLAWS`) and `verifiable.json` (counts per kind and difficulty, flaw
rates, sha256 of each file). With `--tools`, also `verifiable_tools_sft.jsonl`: N demonstrations that solve the
tasks with the world's tools (`verifiable_tool_demos`). Each file draws from its own random stream (`files.stream_rng`), so
`world.json` and the world's other files are the same bytes with or without this option.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rlhfkit.world.files import sha256_of, stream_rng, write_rows
from rlhfkit.world.verifiable import verifiable_records
from rlhfkit.world.verifiable_demos import VERIFIABLE_FLAWS, verifiable_demonstrations
from rlhfkit.world.verifiable_tool_demos import VERIFIABLE_TOOL_FLAWS, verifiable_tool_demonstrations


def build_verifiable(
    out_dir: str | Path, seed: int, n: int, tools: bool = False, practice: float = 0.0
) -> dict:
    """Write the verifiable files into `out_dir`; return the content of `verifiable.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "verifiable_train.jsonl": verifiable_records(
            n, stream_rng(seed, "verifiable_train"), "train", "vtrain"
        ),
        "verifiable_eval.jsonl": verifiable_records(
            max(1, n // 4), stream_rng(seed, "verifiable_eval"), "eval", "veval"
        ),
        "verifiable_sft.jsonl": verifiable_demonstrations(n, stream_rng(seed, "verifiable_sft"), "vsft"),
    }
    if tools:
        files["verifiable_tools_sft.jsonl"] = verifiable_tool_demonstrations(
            n, stream_rng(seed, "verifiable_tools_sft"), "vtool", practice
        )
    info: dict = {"seed": seed, "n": n, "files": {}}
    if tools and practice:
        info["tool_practice"] = practice
    for name, rows in files.items():
        path = out / name
        write_rows(path, rows)
        entry = {
            "count": len(rows),
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
            "kinds": dict(sorted(Counter(r["kind"] for r in rows).items())),
            "difficulty": {
                str(d): c for d, c in sorted(Counter(r["meta"]["difficulty"] for r in rows).items())
            },
        }
        if name in ("verifiable_sft.jsonl", "verifiable_tools_sft.jsonl"):
            entry["quality"] = dict(sorted(Counter(r["quality"] for r in rows).items()))
        info["files"][name] = entry
    info["flaw_rates"] = dict(VERIFIABLE_FLAWS)
    if tools:
        info["tool_flaw_rates"] = dict(VERIFIABLE_TOOL_FLAWS)
    (out / "verifiable.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
