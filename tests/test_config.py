"""Config dataclasses -> CLI flags: every option of the stage commands has help text from its field comment."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from rlhfkit.cli import build_parser
from rlhfkit.config import add_config_args, field_help


@dataclass
class _Inner:
    lr: float = 1e-3  # peak learning rate


@dataclass
class _Outer:
    name: str = "x"  # a wrapped field keeps its comment
    mode: str = "a"  # first line
    # and its continuation
    loop: _Inner = field(default_factory=lambda: _Inner(lr=5e-4))


@dataclass
class _Child(_Outer):
    mode: str = "b"


def test_field_comments_become_help_with_the_real_defaults():
    assert field_help(_Outer) == {
        "name": "a wrapped field keeps its comment",
        "mode": "first line and its continuation",
    }
    assert field_help(_Child)["mode"] == "first line and its continuation"  # a new default keeps the text
    parser = argparse.ArgumentParser()
    add_config_args(parser, _Outer)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["lr"] == "peak learning rate (default: 0.0005)"  # the nested factory's default, not 1e-3


def _subparser(parser, words):
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


@pytest.mark.parametrize("command", ["pretrain", "sft", "reward train", "ppo", "rloo", "grpo"])
def test_every_option_of_a_stage_command_is_described(command):
    parser = _subparser(build_parser(), command.split())
    bare = [a.option_strings[0] for a in parser._actions
            if a.option_strings and not (a.help or "").split("(default:")[0].strip()]  # fmt: skip
    assert bare == []


@pytest.mark.parametrize("command", ["cai revise", "cai label", "evaluate"])
def test_cai_and_evaluate_flags_come_from_their_configs(command):
    parser = _subparser(build_parser(), command.split())
    bare = [a.option_strings[0] for a in parser._actions
            if a.option_strings and not (a.help or "").split("(default:")[0].strip()]  # fmt: skip
    assert bare == [] and any(a.option_strings == ["--config"] for a in parser._actions)
