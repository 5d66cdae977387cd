"""Run `rlhfkit ARGS` in a fresh Python process and measure what the command itself costs.

The child imports and builds the CLI first, then times `main(ARGS)` and takes the growth of its peak RSS
(ru_maxrss after minus before), so torch's import and the interpreter's start count in neither number: a
test can bound the time and memory of the work alone, with generous caps, on a loaded machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
CHILD = """
import importlib, json, resource, sys, time
from rlhfkit.cli import build_parser, main
build_parser()
for module in filter(None, sys.argv[2].split(",")):
    importlib.import_module(module)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    code = main(sys.argv[3:])
finally:
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    with open(sys.argv[1], "w") as fh:
        json.dump({"seconds": seconds, "rss_growth_mb": grown / 1024}, fh)
sys.exit(code)
"""


@dataclass
class Measured:
    code: int
    err: str
    seconds: float  # main(ARGS) alone
    rss_growth_mb: float  # peak RSS of the child during main(ARGS), above its peak before


def run_cli_measured(
    args: list, tmp_path: Path, env: dict | None = None, cwd: Path | None = None, warm: tuple[str, ...] = ()
) -> Measured:
    """`env` values of None unset a variable; `warm` names modules imported before the clock starts (what
    the command imports on its way, so the time is the work's own)."""
    report = tmp_path / "measured.json"
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    for key, value in list(full_env.items()):
        if value is None:
            del full_env[key]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(report), ",".join(warm), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )
    numbers = json.loads(report.read_text())
    return Measured(proc.returncode, proc.stderr, numbers["seconds"], numbers["rss_growth_mb"])
