"""Run (or resume) the pipeline's stages in a run folder: keys, skip and resume, in-process `run(config)`.

Each stage's config is built from its paths in the run folder and its options (`defaults.stage_options`), and
its package's `run(config)` is called in this process. The equivalent command line is recorded in
`pipeline.json` (and printed) only so that a person can rerun the stage by hand.

Skipping and resuming: a stage's *key* is a hash of that command line and of the keys of the stages it reads.
A stage whose key matches the one recorded as finished is skipped; any upstream change changes the keys
downstream, so exactly the affected stages rerun. A stage that was interrupted runs again, and the training
stages continue from their last checkpoint. If a stage's configuration changed since it was started, its
folder is cleared first (an old checkpoint must not leak into a new run).

`run_stage` (one stage, recorded) and `is_done` serve `rlhfkit online` too: its rounds are stages of the same
kind, with their own `pipeline.json` in the online run's folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from pathlib import Path

from rlhfkit.config import config_from_options, to_flags
from rlhfkit.errors import RlhfkitError
from rlhfkit.pipeline.defaults import stage_options
from rlhfkit.pipeline.record import RunRecord, StageRecord
from rlhfkit.pipeline.stages import ALL_STAGE_NAMES, Stage, parse_methods, stage_list


def build_config(stage: Stage, run_dir: Path, options: dict):
    """The stage's config: its files in `run_dir`, then its options."""
    cls = getattr(importlib.import_module(stage.module), stage.config)
    return config_from_options(cls, {**stage.paths(run_dir), **options}, f"pipeline stage [{stage.name}]")


def command_line(stage: Stage, run_dir: Path, options: dict, with_options: bool = True) -> list[str]:
    """The `rlhfkit` command that runs the stage by hand (evaluate's models are repeated `--model NAME=DIR`).
    A path the options set themselves is left out (`[reward] model = "minilm"` replaces the SFT folder), so that
    the command is the same with the options as flags or (`with_options=False`) from `--config defaults:<stage>`."""
    given = {k.replace("_", "-") for k in options}
    paths = {k: v for k, v in stage.paths(run_dir).items() if k.replace("_", "-") not in given}
    models = paths.pop("models", {})
    argv = [*stage.command.split(), *to_flags(paths)]
    argv += [a for name, folder in models.items() for a in ("--model", f"{name}={folder}")]
    return argv + to_flags(options) if with_options else argv


def stage_key(argv: list[str], upstream_keys: list[str]) -> str:
    return hashlib.sha256(json.dumps([argv, upstream_keys]).encode()).hexdigest()[:16]


def run_pipeline(
    run_dir: str | Path,
    config: dict | None = None,
    quick: bool = False,
    from_stage: str | None = None,
    only: str | None = None,
    until: str | None = None,
    cai: bool = False,
    console=None,
    method: str | None = None,
) -> RunRecord:
    """Run (or resume) the pipeline in `run_dir`; returns the run record (`pipeline.json`)."""
    from rich.console import Console

    from rlhfkit.allocator import keep_freed_memory

    keep_freed_memory()  # big per-step tensors reuse malloc's memory instead of fresh pages (allocator.py)
    console = console or Console()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    methods = parse_methods(method, cai)
    stages = stage_list(cai, methods)
    names = [s.name for s in stages]
    for name in (from_stage, only, until):
        if name is not None and name not in names:
            raise RlhfkitError(f"unknown stage '{name}' (stages: {', '.join(names)})")
    opts = stage_options(config or {}, quick, ALL_STAGE_NAMES)
    record = RunRecord.load(run_dir) or RunRecord()
    record.run_dir, record.quick, record.cai, record.methods = str(run_dir), quick, cai, methods
    record.config = config or {}
    selected = [only] if only else names[names.index(from_stage) :] if from_stage else names
    if until is not None:
        selected = [s for s in selected if names.index(s) <= names.index(until)]
    forced = set(selected) if (only or from_stage) else set()

    keys: dict[str, str] = {}
    t_start = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        key = stage_key(
            command_line(stage, run_dir, opts[stage.name]), [keys.get(d, "") for d in stage.depends]
        )
        keys[stage.name] = key
        if stage.name not in selected:
            continue
        done = is_done(record, run_dir, stage, key)
        elapsed = time.perf_counter() - t_start
        eta = sum(_estimate(record, s, quick) for s in stages[i - 1 :] if s.name in selected)
        header = f"[bold cyan]stage {i}/{len(stages)}: {stage.name}[/] — {stage.summary}"
        console.rule(f"{header}  [dim](elapsed {_hms(elapsed)}, eta ~{_hms(eta)})[/]")
        if done and stage.name not in forced:
            console.print(f"[green]up to date[/] (key {key}); skipped")
            continue
        for dep in stage.depends:
            dep_stage = stages[names.index(dep)]
            if not dep_stage.folder(run_dir).exists():
                raise RlhfkitError(
                    f"stage '{stage.name}' needs '{dep}' first ({dep_stage.folder(run_dir)} is missing)"
                )
        run_stage(record, run_dir, stage, opts[stage.name], key, console, fresh=stage.name in forced)
    record.total_seconds = round(sum(s.seconds or 0 for s in record.stages.values()), 1)
    record.save(run_dir)
    return record


def is_done(record: RunRecord, run_dir: Path, stage: Stage, key: str) -> bool:
    """The stage finished with this key (the same command and inputs) and its output is still there."""
    previous = record.stages.get(stage.name)
    done = previous is not None and previous.status == "done" and previous.key == key
    return done and stage.folder(run_dir).exists()


def run_stage(
    record: RunRecord, run_dir: Path, stage: Stage, options: dict, key: str, console, fresh: bool = False
) -> None:
    """Run one stage's `run(config)` in this process, recorded in `run_dir`'s `pipeline.json` as it starts,
    fails or finishes. A stage started before with another key (its configuration changed), or `fresh`, starts
    from an empty output: an old checkpoint must not be resumed into another configuration. One started with
    the same key continues (the training stages from their last checkpoint)."""
    argv = command_line(stage, run_dir, options)
    output = stage.folder(run_dir)
    previous = record.stages.get(stage.name)
    # Never the run folder itself (online's last policy is written there, beside the record and the rounds).
    if ((previous is not None and previous.key != key) or fresh) and output.resolve() != run_dir.resolve():
        _clear(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.suffix:  # a folder (the others are single files: report.html, online's JSONL)
        output.mkdir(parents=True, exist_ok=True)
    if stage.before is not None:
        stage.before(run_dir)
    config_obj = build_config(stage, run_dir, options)
    record.stages[stage.name] = StageRecord("running", key, ["rlhfkit", *argv], options)
    record.save(run_dir)
    console.print("[dim]$ rlhfkit " + " ".join(argv) + "[/]")
    t0 = time.perf_counter()
    try:
        importlib.import_module(stage.module).run(config_obj)
        if stage.after is not None:
            stage.after(run_dir)
    except BaseException as exc:
        record.stages[stage.name].status = "failed"
        record.save(run_dir)
        if isinstance(exc, RlhfkitError):
            raise RlhfkitError(
                f"stage '{stage.name}' failed: {exc} (fix it and rerun: finished stages are kept)"
            ) from None
        raise
    duration = time.perf_counter() - t0
    rec = record.stages[stage.name]
    rec.status, rec.seconds = "done", round(duration, 1)
    rec.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rec.metrics = headline_metrics(run_dir, stage)
    record.save(run_dir)
    console.print(f"[green]done[/] in {_hms(duration)}")


def headline_metrics(run_dir: Path, stage: Stage) -> dict:
    """A few numbers worth showing for a finished stage (read from what the stage wrote)."""
    out = stage.folder(run_dir)
    if (out / "world.json").exists():
        files = json.loads((out / "world.json").read_text()).get("files", {})
        return {
            name.removesuffix(".jsonl") + "_records": f.get("count")
            for name, f in files.items()
            if isinstance(f, dict)
        }
    for path in (out / "rlhfkit.json", out / "results.json", out / "summary.json"):
        if path.exists():
            data = json.loads(path.read_text())
            metrics = data.get("metrics", data.get("headline", data))
            flat = {
                k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            return dict(list(flat.items())[:10])
    if out.is_dir():
        files = [p for p in out.iterdir() if p.suffix == ".jsonl"]
        return {p.stem + "_records": sum(1 for _ in p.open(encoding="utf-8")) for p in files}
    return {}


def _estimate(record: RunRecord, stage: Stage, quick: bool) -> float:
    rec = record.stages.get(stage.name)
    if rec is not None and rec.status == "done" and rec.seconds is not None:
        return float(rec.seconds)
    return stage.estimate_s / (10 if quick else 1)


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
