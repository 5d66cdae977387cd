"""Each stage's options: `defaults.toml`, then `quick.toml` with `--quick`, then the user's pipeline config.

The config dataclasses hold every default; `defaults.toml` holds only what the pipeline changes, and a stage
may `inherit` another stage's table there (RLOO, GRPO, the hybrid and the CAI branch's PPO run with [ppo]'s
settings). `quick.toml` is laid over it the same way, inheritance included. The user's tables apply to their
own stage only (a user's [ppo] leaves [cai_ppo] alone), and a top-level `seed` seeds every stage that has one.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.config import DEFAULTS_FILE, load_toml, stage_table
from rlhfkit.errors import RlhfkitError

QUICK_FILE = Path(DEFAULTS_FILE).with_name("quick.toml")

# Stages whose configs have no randomness to seed (and so no seed field); `seed` seeds every other stage.
UNSEEDED = ("tokenizer", "rlvr_tokenizer", "report")


def stage_options(config: dict, quick: bool, names: list[str]) -> dict[str, dict]:
    """{stage: its options (flag names with dashes)} for every stage in `names`."""
    overlays = (load_toml(QUICK_FILE),) if quick else ()
    defaults = load_toml(DEFAULTS_FILE)
    opts = {name: stage_table(defaults, name, DEFAULTS_FILE, overlays) for name in names}
    seed = config.get("seed")
    for name, table in config.items():
        if name == "seed":
            continue
        if name not in opts:
            raise RlhfkitError(f"pipeline config: unknown stage table [{name}] (stages: {', '.join(names)})")
        if not isinstance(table, dict):
            raise RlhfkitError(f"pipeline config: [{name}] must be a table of that command's options")
        opts[name].update({k.replace("_", "-"): v for k, v in table.items()})
    if seed is not None:
        for name in opts:
            if name not in UNSEEDED:
                opts[name].setdefault("seed", seed)
    return opts
