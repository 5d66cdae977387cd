"""Config dataclasses -> CLI flags: every option of the stage commands has help text from its field comment."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from rlhfkit.cli import build_parser
from rlhfkit.config import add_config_args, field_help
from rlhfkit.train.loop import LoopConfig


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


@pytest.mark.parametrize(
    "command",
    ["world build", "tokenizer train", "pretrain", "sft", "generate", "label", "reward train", "ppo", "rloo",
     "grpo", "dpo", "rs", "online", "report", "cai world-data"],
)  # fmt: skip
def test_every_option_of_a_stage_command_is_described(command):
    parser = _subparser(build_parser(), command.split())
    assert "--help" in parser.format_help()  # renders: a `%` in a field comment is not a format directive
    bare = [a.option_strings[0] for a in parser._actions
            if a.option_strings and not (a.help or "").split("(default:")[0].strip()]  # fmt: skip
    assert bare == []


@pytest.mark.parametrize("command", ["cai revise", "cai label", "evaluate"])
def test_cai_and_evaluate_flags_come_from_their_configs(command):
    parser = _subparser(build_parser(), command.split())
    bare = [a.option_strings[0] for a in parser._actions
            if a.option_strings and not (a.help or "").split("(default:")[0].strip()]  # fmt: skip
    assert bare == [] and any(a.option_strings == ["--config"] for a in parser._actions)


def _every_stage():
    from rlhfkit.pipeline import CAI_STAGES, HYBRID_STAGES, METHODS, rlhf_stages

    stages = {s.name: s for s in [*rlhf_stages(list(METHODS)), *HYBRID_STAGES, *CAI_STAGES]}
    return [stages[name] for name in sorted(stages)]


@pytest.mark.parametrize("stage", _every_stage(), ids=lambda s: s.name)
def test_a_by_hand_command_with_the_shipped_defaults_is_the_pipelines_stage(stage, tmp_path):
    """`rlhfkit <command> --config defaults:<stage>` builds exactly the config the pipeline's stage runs, and the
    command line the pipeline records for the stage builds it too."""
    import importlib

    from rlhfkit.config import config_from_args
    from rlhfkit.pipeline import ALL_STAGE_NAMES, build_config, command_line, stage_options

    for name in ("base", "sft", "ppo"):  # evaluate's models are the folders that hold one
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    cls = getattr(importlib.import_module(stage.module), stage.config)
    options = stage_options({}, False, ALL_STAGE_NAMES)[stage.name]
    in_process = build_config(stage, tmp_path, options)
    parser = build_parser()
    recorded = parser.parse_args(command_line(stage, tmp_path, options))
    # by hand: the stage's paths its table does not set itself, then the table (`--config defaults:<stage>`)
    paths = command_line(stage, tmp_path, options, with_options=False)
    by_hand = parser.parse_args([*paths, "--config", f"defaults:{stage.name}"])
    for args in (recorded, by_hand):
        cfg = config_from_args(cls, args, stage.name)
        if stage.command == "evaluate":
            from rlhfkit.evaluate.commands import parse_models

            cfg.models = parse_models(args.model)
        assert cfg == in_process


def test_a_config_table_can_be_picked_and_unknown_keys_are_named(tmp_path):
    from rlhfkit.cli import build_parser
    from rlhfkit.config import config_from_args
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.train.sft import SFTConfig

    parser = build_parser()
    args = parser.parse_args(["sft", "--model", "m", "--data", "d", "--config", "defaults:cai_labeler"])
    cfg = config_from_args(SFTConfig, args, "sft")
    assert (cfg.epochs, cfg.max_len, cfg.loop.lr) == (3, 384, 1e-3)
    bad = tmp_path / "bad.toml"
    bad.write_text("[sft]\nepochs = 1\nwarp-speed = 9\n")
    args = parser.parse_args(["sft", "--model", "m", "--data", "d", "--config", str(bad)])
    with pytest.raises(
        RlhfkitError, match=r"bad.toml \[sft\]: unknown option\(s\) for SFTConfig: warp_speed"
    ):
        config_from_args(SFTConfig, args, "sft")


def test_a_config_command_reads_its_section_runs_and_says_what_it_wrote(tmp_path, capsys):
    from rlhfkit.config import add_command_group, add_config_command

    ran = []
    parser = argparse.ArgumentParser(prog="rlhfkit")
    group = add_command_group(parser.add_subparsers(), "thing", help="a group")
    add_config_command(
        group,
        "make",
        _Outer,
        lambda cfg: ran.append(cfg) or tmp_path / cfg.name,
        section="things",
        required=("name",),
        done="made {config.mode} -> {out}",
        help="make a thing",
    )
    config = tmp_path / "c.toml"
    config.write_text('[things]\nmode = "from-table"\nlr = 0.5\n')
    args = parser.parse_args(["thing", "make", "--name", "n", "--config", str(config)])
    assert args.thing_command == "make"
    assert args.func(args) == 0
    assert (ran[0].name, ran[0].mode, ran[0].loop.lr) == ("n", "from-table", 0.5)  # flags over [things]
    assert capsys.readouterr().out == f"made from-table -> {tmp_path / 'n'}\n"
    with pytest.raises(SystemExit):  # a required flag is required on the command line
        parser.parse_args(["thing", "make"])


def test_required_fields_and_minimums_give_one_message_naming_the_flag():
    from rlhfkit.config import require, require_at_least
    from rlhfkit.errors import RlhfkitError

    cfg = _Outer(name="")
    with pytest.raises(RlhfkitError, match=r"^--name is required \(a name\)$"):
        require(cfg, mode="a mode", name="a name")
    cfg.loop.lr = 0
    with pytest.raises(RlhfkitError, match=r"^--lr: expected an integer >= 1, got 0$"):
        require_at_least(cfg.loop, 1, "lr")
    require_at_least(cfg.loop, 0, "lr")


def test_a_nested_configs_own_defaults_are_the_ones_that_run():
    """A stage that nests the loop with its own defaults (SFT's lr) gets them from flags and from TOML alike;
    the builder once ignored them, so the help said one lr and the run used another."""
    from rlhfkit.config import config_from_args, config_from_options

    @dataclass
    class Stage:
        out: str = ""
        loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=5e-4, warmup_steps=7))

    built = config_from_options(Stage, {"out": "x"}, "test")
    assert (built.loop.lr, built.loop.warmup_steps, built.loop.weight_decay) == (5e-4, 7, 0.1)
    assert config_from_options(Stage, {"lr": 1e-3}, "test").loop == LoopConfig(lr=1e-3, warmup_steps=7)
    parser = argparse.ArgumentParser()
    add_config_args(parser, Stage)
    assert config_from_args(Stage, parser.parse_args(["--warmup-steps", "3"]), "stage").loop == LoopConfig(
        lr=5e-4, warmup_steps=3
    )


def test_a_switch_given_as_text_is_read_as_its_word():
    """Benchmarks pass stage options as text (`--reward-option dropout=false`): "false" must not switch on."""
    from rlhfkit.config import config_from_options
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.reward.train import RewardConfig

    def dropout(value):
        return config_from_options(
            RewardConfig, {"model": "m", "data": "d", "dropout": value}, "test"
        ).dropout

    assert [dropout(v) for v in ("false", "False", "0", "no", False)] == [False] * 5
    assert [dropout(v) for v in ("true", "1", "yes", True)] == [True] * 4
    with pytest.raises(RlhfkitError, match="dropout: cannot read 'maybe'"):
        dropout("maybe")
