"""One source of defaults: the config dataclasses hold them; defaults.toml holds only what the pipeline
changes, once per stage (shared settings inherited); quick.toml only what `--quick` changes on top."""

from __future__ import annotations

import importlib

import pytest

from rlhfkit.config import DEFAULTS_FILE, _default_at, _leaf_fields, load_toml, stage_table
from rlhfkit.pipeline import CAI_STAGES, HYBRID_STAGES, METHOD_STAGES, RLVR_STAGES, STAGES
from rlhfkit.pipeline.defaults import QUICK_FILE

STAGE_BY_NAME = {s.name: s for s in [*STAGES, *METHOD_STAGES, *HYBRID_STAGES, *CAI_STAGES, *RLVR_STAGES]}


def _dataclass_default(stage_name: str, key: str):
    stage = STAGE_BY_NAME[stage_name]
    cls = getattr(importlib.import_module(stage.module), stage.config)
    paths = {path[-1]: path for path, _, _ in _leaf_fields(cls)}
    name = key.replace("-", "_")
    assert name in paths, f"[{stage_name}] {key}: not an option of {cls.__name__}"
    return _default_at(cls, paths[name])


def _without(tables: dict, stage: str, key: str) -> dict:
    return {**tables, stage: {k: v for k, v in tables[stage].items() if k != key}}


def _settings(path) -> list[tuple[str, str]]:
    return [(stage, key) for stage, table in load_toml(path).items() for key in table if key != "inherit"]


def test_every_table_is_a_stage_and_inherits_from_a_stage():
    defaults, quick = load_toml(DEFAULTS_FILE), load_toml(QUICK_FILE)
    assert set(defaults) <= set(STAGE_BY_NAME) and set(quick) <= set(STAGE_BY_NAME)
    assert {t["inherit"] for t in defaults.values() if "inherit" in t} <= set(STAGE_BY_NAME)
    assert not any("inherit" in t for t in quick.values())  # the inheritance is defaults.toml's alone


@pytest.mark.parametrize(("stage", "key"), _settings(DEFAULTS_FILE))
def test_a_pipeline_default_changes_what_the_stage_would_have_without_it(stage, key):
    """A key equal to the dataclass's default, or to the table it inherits, would be a second copy."""
    defaults = load_toml(DEFAULTS_FILE)
    without = stage_table(_without(defaults, stage, key), stage).get(key, _dataclass_default(stage, key))
    assert defaults[stage][key] != without, f"[{stage}] {key} repeats a default set elsewhere"


@pytest.mark.parametrize(("stage", "key"), _settings(QUICK_FILE))
def test_a_quick_setting_changes_what_the_pipeline_would_run(stage, key):
    defaults, quick = load_toml(DEFAULTS_FILE), load_toml(QUICK_FILE)
    overlay = (_without(quick, stage, key),)
    without = stage_table(defaults, stage, overlays=overlay).get(key, _dataclass_default(stage, key))
    assert quick[stage][key] != without, f"quick.toml [{stage}] {key} repeats a value set elsewhere"


def test_the_stage_commands_write_no_defaults_of_their_own():
    """Every flag of a pipeline stage's command defaults to None: the value comes from the dataclass."""
    import argparse

    from rlhfkit.cli import build_parser

    parser = build_parser()
    for stage in STAGE_BY_NAME.values():
        command = parser
        for word in stage.command.split():
            sub = next(a for a in command._actions if isinstance(a, argparse._SubParsersAction))
            command = sub.choices[word]
        flags = [
            a for a in command._actions if a.option_strings and a.dest not in ("help", "report", "model")
        ]
        assert [a.dest for a in flags if a.default is not None] == [], stage.command
