"""Read a run folder for the report: a missing or half-written stage folder is skipped, never an error; the
run record (`pipeline.json`) is read strictly, by its schema (`pipeline.record`).

A run folder is one folder per stage, named as the stage (`FOLDERS`, from the pipeline's stage table: world,
tokenizer, pretrain, sft, candidates, labels, reward, ppo, ..., cai, evaluate) plus `pipeline.json`; a run made
before the folders took their stages' names (base, comparisons, rm, eval) reads the same (`OLD_FOLDERS`). Training stages hold `metrics.jsonl` (one object per logged step) and `rlhfkit.json`
(stage, config, metrics); the reward model also `eval.json` (`reward.evaluate.comparison_metrics`); the
evaluation `results.json` and `responses.jsonl`. A folder that itself holds `results.json` is read as an
evaluation-only run, so `rlhfkit report` also works on the output of a bare `rlhfkit evaluate`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from rlhfkit.data.jsonl import read_jsonl_lenient
from rlhfkit.pipeline.stages import METHOD_STAGES, OLD_FOLDERS, STAGES, run_path

# Where each stage writes, from the pipeline's one stage table (`stage name -> folder`); the report looks a stage
# up by its name here and never guesses among other spellings.
FOLDERS = {s.name: s.output for s in [*STAGES, *METHOD_STAGES] if not s.output.endswith(".html")}
STAGE_ORDER = (*(f for f in FOLDERS.values() if f != FOLDERS["evaluate"]), "cai", FOLDERS["evaluate"])
MAX_LABEL_GROUPS = 5000  # label quality is measured on at most this many comparisons (it is a summary)


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def stage_folders(run_dir: Path) -> list[tuple[str, Path]]:
    """(name, folder) for each subfolder of the run: the pipeline's stages first, in pipeline order and under
    their stage names (`FOLDERS`; an old run's `rm/` is the `reward` stage), then any other folder by its own name."""
    found = {p.name: p for p in sorted(run_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    stage_of = {folder: name for name, folder in FOLDERS.items()}
    stage_of.update({OLD_FOLDERS[f]: stage_of[f] for f in stage_of if f in OLD_FOLDERS})
    known = []
    for f in STAGE_ORDER:
        folder = run_path(run_dir, f)
        if folder.name in found:
            known.append((stage_of.get(folder.name, folder.name), found.pop(folder.name)))
    return known + sorted(found.items())


def numeric_series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{key: (steps, values)} for every numeric key in a metrics log (x is `step`, else the line index)."""
    series: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for index, record in enumerate(records):
        x = record.get("step", index)
        if not is_number(x):
            x = index
        for key, value in record.items():
            if key != "step" and is_number(value):
                series[key][0].append(float(x))
                series[key][1].append(float(value))
    return dict(series)


def last_samples(records: list[dict]) -> tuple[float | None, list[str]]:
    """(step, samples) of the last logged evaluation that carried samples."""
    for record in reversed(records):
        samples = record.get("samples")
        if isinstance(samples, list) and samples:
            return record.get("step"), [str(s) for s in samples]
    return None, []


def pipeline_stages(run_dir: Path) -> list[dict]:
    """pipeline.json's stages as {name, status, seconds, metrics, config, command}, in the order they ran; []
    when the run has no record. The record is read strictly (`pipeline.record.RunRecord`): a version, key or
    type it does not know raises `RlhfkitError` instead of silently dropping a section."""
    from rlhfkit.pipeline.record import RunRecord

    record = RunRecord.load(run_dir)
    if record is None:
        return []
    return [
        {
            "name": name,
            "status": r.status,
            "seconds": r.seconds,
            "metrics": r.metrics,
            "config": r.options or None,
            "command": r.command,
        }
        for name, r in record.stages.items()
    ]


def eval_folder(run_dir: Path) -> Path | None:
    if (run_dir / "results.json").is_file():
        return run_dir
    folder = run_path(run_dir, FOLDERS["evaluate"])
    if (folder / "results.json").is_file():
        return folder
    return None


def agreement_numbers(folder: Path) -> dict[str, float]:
    """Numbers whose key mentions agreement (or alpha/kappa) in any JSON file of a folder, flattened."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif is_number(value) and any(w in prefix.lower() for w in ("agree", "alpha", "kappa")):
            found[prefix] = float(value)

    for path in sorted(folder.glob("*.json")):
        data = read_json(path)
        if data is not None:
            walk(path.stem, data)
    return found


def label_quality(folder: Path) -> dict:
    """Measured on the comparison files of a folder: inter-annotator pairwise agreement (items labelled more
    than once) and, for demo-world data, how often the labels agree with the gold judge."""
    from rlhfkit.annotate.agreement import pair_preferences, pairwise_agreement

    units: dict[tuple, list[int]] = defaultdict(list)
    gold_hits: list[float] = []
    groups = 0
    seen: set[str] = set()  # a split (train/eval) repeats records of all.jsonl: count each label once
    for path in sorted(folder.glob("*.jsonl")):
        for record in read_jsonl_lenient(path, MAX_LABEL_GROUPS - groups):
            ident = json.dumps(record, sort_keys=True)
            if ident in seen:
                continue
            seen.add(ident)
            prefs = _record_preferences(record, pair_preferences)
            if prefs is None:
                continue
            groups += 1
            prompt, completions = prefs[0], prefs[1]
            key = json.dumps([prompt, completions], sort_keys=True)
            for pair, value in prefs[2].items():
                units[(key, *pair)].append(value)
            gold_hits.extend(_gold_agreement(record, prompt, completions, prefs[2]))
        if groups >= MAX_LABEL_GROUPS:
            break
    out: dict = {"comparisons_read": groups}
    agreement = pairwise_agreement([u for u in units.values() if len(u) >= 2])
    if agreement is not None:
        out["inter_annotator_agreement"] = agreement
        out["units_labelled_twice"] = sum(1 for u in units.values() if len(u) >= 2)
    measured = folder / "agreement.json"  # written by the pipeline when every item was labelled once
    if "inter_annotator_agreement" not in out and measured.exists():
        extra = json.loads(measured.read_text())
        if extra.get("pairwise_agreement") is not None:
            out["inter_annotator_agreement"] = extra["pairwise_agreement"]
            out["units_labelled_twice"] = extra.get("pairs", 0)
    if gold_hits:
        out["labels_agree_with_gold"] = sum(gold_hits) / len(gold_hits)
        out["gold_pairs"] = len(gold_hits)
    return out


def _record_preferences(record: dict, pair_preferences):
    """(prompt, completion texts, {(i, j): +1/0/-1}) for a ranking or pair record, else None."""
    prompt = record.get("prompt")
    if not isinstance(prompt, list):
        return None
    if isinstance(record.get("completions"), list) and isinstance(record.get("ranking"), list):
        texts = [_text(c) for c in record["completions"]]
        try:
            return prompt, texts, pair_preferences(record["ranking"], record.get("ties") or [])
        except (TypeError, KeyError):
            return None
    if "chosen" in record and "rejected" in record:
        texts = [_text(record["chosen"]), _text(record["rejected"])]
        return prompt, texts, {(0, 1): 0 if record.get("tie") else 1}
    return None


def _text(messages: object) -> str:
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return str(messages)


def _gold_agreement(record: dict, prompt: list, texts: list[str], prefs: dict) -> list[float]:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    if "task" not in meta:
        return []
    from rlhfkit.world import judge_score

    gold = [judge_score(prompt, t, meta).total for t in texts]
    hits = []
    for (i, j), value in prefs.items():
        if value == 0:
            continue
        diff = (gold[i] - gold[j]) * value
        hits.append(1.0 if diff > 0 else 0.5 if diff == 0 else 0.0)
    return hits
