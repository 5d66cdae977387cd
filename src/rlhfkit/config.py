"""Stage configs are dataclasses; this turns them into CLI flags and reads TOML overrides.

Every field of a stage config becomes `--field-name` (underscores become dashes). Fields of nested config
dataclasses (e.g. the shared `LoopConfig`) are flattened to the same level: `--max-steps`, `--lr`. A
`--config FILE.toml` provides values too; flags given on the command line win over the file, the file wins over
the defaults. In TOML, nested configs are tables: `[loop] max_steps = 500`. In a config with `epochs`, a
`--max-steps` given without `--epochs` runs exactly that many steps (see `_steps_or_epochs`).

Two class attributes shape a config's options: `UNUSED`, names of inherited fields the stage does not read (PPO's
loop config has no cosine schedule: no `--min-lr-ratio`); they get no flag and are an unknown key in a table.
`DEPRECATED`, old switches kept working: `{"bf16": ("dtype", "bfloat16")}` makes `--bf16` (or `bf16 = true`
in a table) mean `--dtype bfloat16`, with a warning.

A field's help text is the comment after it in the dataclass (`lr: float = 1e-3  # peak learning rate`), with
comment lines right below it as its continuation, so `--help` and the code say the same thing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import sys
import tokenize
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError


def _is_config(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _leaf_fields(cls) -> list[tuple[tuple[str, ...], dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in _option_fields(cls):
        tp = hints[f.name]
        if _is_config(tp):
            out.extend(((f.name, *path), ff, t) for path, ff, t in _leaf_fields(tp))
        else:
            out.append(((f.name,), f, tp))
    return out


def _option_fields(cls) -> list[dataclasses.Field]:
    """The fields of `cls` that are options: all but those it declares `UNUSED`."""
    unused = getattr(cls, "UNUSED", ())
    return [f for f in dataclasses.fields(cls) if f.name not in unused]


def _deprecated(cls) -> dict[str, tuple[str, Any]]:
    """{old switch: (option, value it means)} of `cls` and the configs nested in it."""
    return {old: new for config in _configs(cls) for old, new in getattr(config, "DEPRECATED", {}).items()}


def _replace_deprecated(cls, flags: dict[str, Any], where: str) -> dict[str, Any]:
    """`flags` with each deprecated switch replaced by the option it means (a switch given false drops out)."""
    flags = dict(flags)
    for old, (new, value) in _deprecated(cls).items():
        if flags.get(old) is None:
            flags.pop(old, None)
            continue
        old_flag, new_flag = "--" + old.replace("_", "-"), "--" + new.replace("_", "-")
        print(f"rlhfkit: warning: {old_flag} is deprecated; use {new_flag} {value}", file=sys.stderr)
        if not flags.pop(old):
            continue
        if flags.get(new) not in (None, "auto", value):
            raise RlhfkitError(
                f"{where}: {old_flag} means {new_flag} {value}, which contradicts {new_flag} {flags[new]}"
            )
        flags[new] = value
    return flags


@functools.cache
def field_help(cls) -> dict[str, str]:
    """Each field's help: the comment after it in the class, comment lines just below it appended; a subclass
    that only changes a default keeps its base's text."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # no source shipped (a frozen build): flags without help, not an error
            continue
        names, local = {f.name for f in dataclasses.fields(klass)}, {}
        current, depth, line_start = None, 0, True
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            elif tok.type == tokenize.NAME and line_start and depth == 0 and tok.start[1] == 4:
                current = tok.string if tok.string in names else None  # a field (or a method: None)
            elif tok.type == tokenize.COMMENT and current and "fmt:" not in tok.string:
                text = tok.string.lstrip("#").strip()
                local[current] = f"{local[current]} {text}" if current in local else text
            line_start = tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)
        out.update(local)
    return out


def _scalar_type(tp):
    """The base type of `X | None`, `list[X]` etc., and whether it is a list."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def add_config_args(
    parser: argparse.ArgumentParser,
    cls,
    *,
    required: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
) -> None:
    """Add one flag per (flattened) config field, defaulting to None so we can tell what the user set.
    `required` fields must be given on the command line; `skip` fields get no flag (the command adds its own)."""
    helps: dict[str, str] = {}
    for config in _configs(cls):
        helps.update(field_help(config))
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="read options from a TOML file (flags override it): FILE, FILE:TABLE, or `defaults` for the "
        "pipeline's own settings of this stage (`defaults:TABLE` for another stage's)",
    )
    for path, _f, tp in _leaf_fields(cls):
        name = path[-1]
        if name in skip:
            continue
        base, is_list = _scalar_type(tp)
        flag = "--" + name.replace("_", "-")
        default = _default_at(cls, path)
        help_text = helps.get(name, "").replace("%", "%%")  # argparse formats help with %
        help_text += f" (default: {default})" if default not in (None, "") and name not in required else ""
        common = {"dest": name, "default": None, "help": help_text}
        if name in required:
            common["required"] = True
        if base is dict:  # a table of options, given on the command line as a JSON object
            parser.add_argument(flag, type=_json_object, **common)
        elif base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif is_list:  # `--stop a b` and `--stop a --stop b` both give [a, b]
            parser.add_argument(flag, nargs="*", action="extend", type=base, **common)
        else:
            parser.add_argument(flag, type=base, **common)
    for old, (new, value) in _deprecated(cls).items():
        parser.add_argument(
            "--" + old.replace("_", "-"),
            dest=old,
            default=None,
            action=argparse.BooleanOptionalAction,
            help=f"deprecated: means --{new.replace('_', '-')} {value}",
        )


def add_command_group(
    sub: argparse._SubParsersAction, name: str, *, metavar: str = "ACTION", **parser_options: Any
) -> argparse._SubParsersAction:
    """Command `name` whose work is done by its subcommands (`rlhfkit world build`): returns the subparsers to
    add them to. `parser_options` (help, description) go to `add_parser`."""
    group = sub.add_parser(name, **parser_options)
    return group.add_subparsers(dest=f"{name}_command", metavar=metavar, required=True)


def add_config_command(
    sub: argparse._SubParsersAction,
    name: str,
    cls,
    run: Callable[[Any], Any],
    *,
    section: str | None = None,
    done: str | None = None,
    required: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    **parser_options: Any,
) -> argparse.ArgumentParser:
    """Subcommand `name` for a stage: one flag per field of `cls` (`add_config_args`) and a handler that builds
    the config (`config_from_args`; `section`, the stage's table in a TOML file, defaults to `name`) and calls
    `run(config)`. `done`, if given, is printed after: a format string of `out` (what `run` returned) and
    `config` ("dpo: policy written to {out}"). `parser_options` (help, description) go to `add_parser`."""
    parser = sub.add_parser(name, **parser_options)
    add_config_args(parser, cls, required=required, skip=skip)

    def run_command(args: argparse.Namespace) -> int:
        config = config_from_args(cls, args, section or name)
        out = run(config)
        if done:
            print(done.format(out=out, config=config))
        return 0

    parser.set_defaults(func=run_command)
    return parser


def require(cfg: Any, **fields: str) -> None:
    """One clear error for the first empty required field of a stage config: `--name is required (what)`."""
    for name, what in fields.items():
        if not getattr(cfg, name):
            raise RlhfkitError(f"--{name.replace('_', '-')} is required ({what})")


def require_at_least(cfg: Any, minimum: int, *names: str) -> None:
    """One clear error for the first of the integer fields `names` below `minimum`."""
    for name in names:
        value = getattr(cfg, name)
        if value < minimum:
            raise RlhfkitError(f"--{name.replace('_', '-')}: expected an integer >= {minimum}, got {value}")


def _configs(cls) -> list:
    """The config class and the config classes nested in it (e.g. its `loop: LoopConfig`)."""
    hints = typing.get_type_hints(cls)
    nested = [tp for f in dataclasses.fields(cls) if _is_config(tp := hints[f.name])]
    return [cls] + [c for tp in nested for c in _configs(tp)]


def _default_at(cls, path: tuple[str, ...]):
    """The default a flattened field really has: a nested config's factory may set its own (SFT's lr)."""
    value = cls()
    for name in path:
        value = getattr(value, name)
    return value if value not in ([], {}) else None


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"steps\": 4}'")
    return value


def config_from_args(cls, args: argparse.Namespace, section: str | None = None):
    """Build a config: defaults, then the TOML file (if any), then the flags that were given.

    A file whose top level holds a table named `section` (the command's name, as in the pipeline's
    `defaults.toml`) contributes that table's keys as if they were flags; `--config FILE:TABLE` picks
    another table. Otherwise the file's keys are the config's fields, nested configs as tables.
    """
    values: dict[str, Any] = {}
    table: dict[str, Any] = {}
    source = None
    if getattr(args, "config", None):
        source, wanted = split_config(args.config, section)
        values = load_toml(source)
        shipped = Path(source) == DEFAULTS_FILE  # a stage the pipeline leaves at its defaults has no table
        if wanted and (isinstance(values.get(wanted), dict) or shipped):
            table = _table_as_flags(cls, stage_table(values, wanted, source), f"{source} [{wanted}]")
            values = {}
        elif wanted and wanted != section:
            raise RlhfkitError(f"{source}: no table [{wanted}]")
    flat_given = {**table, **{k: v for k, v in vars(args).items() if v is not None}}
    flat_given = _replace_deprecated(cls, flat_given, "command line")
    values = _replace_deprecated(cls, values, str(source)) if values else values
    config = _build(cls, values, flat_given, source=source)
    _steps_or_epochs(config, set(flat_given) | _given_names(values))
    return config


def config_from_options(cls, options: dict[str, Any], where: str):
    """Build a config in-process from a stage table (keys are flag names, dashes or underscores): the same
    config `rlhfkit <command> --key value ...` builds from `to_flags(options)`, values typed as the flags
    would type them (an int given for a float field becomes a float), `_steps_or_epochs` applied alike."""
    flags = _table_as_flags(cls, options, where)
    types_by_name = {path[-1]: tp for path, _, tp in _leaf_fields(cls)}
    typed = {}
    for name, value in flags.items():
        if value is None:
            continue
        try:
            typed[name] = _as_flag_type(types_by_name[name], value)
        except ValueError:
            raise RlhfkitError(
                f"{where}: {name.replace('_', '-')}: cannot read {value!r} as its type"
            ) from None
    config = _build(cls, {}, typed, source=where)
    _steps_or_epochs(config, set(typed))
    return config


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _as_flag_type(tp, value):
    """The value argparse would give for `to_flags({key: value})` (a str, int or float parsed back). A switch
    given as text (`--reward-option dropout=false` in a benchmark) is read as the word it is: any non-empty
    string is truthy, so "false" would otherwise switch it on."""
    base, is_list = _scalar_type(tp)
    if is_list:
        return [_as_flag_type(base, v) for v in (value if isinstance(value, list | tuple) else [value])]
    if base in (int, float, str) and not isinstance(value, bool):
        return base(str(value)) if base is not str else str(value)
    if base is bool and isinstance(value, str):
        word = value.strip().lower()
        if word not in _BOOL_WORDS:
            raise ValueError(value)
        return _BOOL_WORDS[word]
    return value


def to_flags(options: dict[str, Any]) -> list[str]:
    """A stage table as the command line that sets it: `{"max-steps": 5, "bf16": False}` ->
    `--max-steps 5 --no-bf16`; lists repeat the flag; a table (dict) is given as a JSON object."""
    import json

    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):  # e.g. `rlhfkit online --update-options '{"steps": 4}'`
            out += [flag, json.dumps(value)]
        elif isinstance(value, list | tuple):
            for v in value:
                out += [flag, str(v)]
        elif value is not None:
            out += [flag, str(value)]
    return out


def _table_as_flags(cls, table: dict, where: str) -> dict[str, Any]:
    """A stage table's keys (flag names, dashes or underscores) as flag values; an unknown key is an error."""
    known = {path[-1] for path, _, _ in _leaf_fields(cls)}
    out = _replace_deprecated(cls, {k.replace("-", "_"): v for k, v in table.items()}, where)
    unknown = sorted(set(out) - known)
    if unknown:
        raise RlhfkitError(f"{where}: unknown option(s) for {cls.__name__}: {', '.join(unknown)}")
    return out


def _given_names(values: dict) -> set[str]:
    """The option names a TOML file sets, nested tables flattened (as the flags are)."""
    out = set()
    for key, value in values.items():
        out |= _given_names(value) if isinstance(value, dict) else {key}
    return out


def _steps_or_epochs(config, given: set[str]) -> None:
    """A config with `epochs` (which sets the loop's `max_steps` from the data size) and `max_steps`: a
    `--max-steps` given alone means exactly that many steps (epochs 0); given with `--epochs` above 0 it
    would be ignored, so that is an error instead."""
    if not hasattr(config, "epochs") or "max_steps" not in given:
        return
    if "epochs" not in given:
        config.epochs = 0
    elif config.epochs > 0:
        raise RlhfkitError(
            f"--epochs {config.epochs:g} sets the number of steps from the data size and would override "
            "--max-steps; give --epochs 0 to run exactly --max-steps"
        )


def stage_table(
    tables: dict, name: str, source: str | Path = "config", overlays: tuple[dict, ...] = ()
) -> dict:
    """Stage `name`'s table of flags over the tables it inherits from: `[rloo] inherit = "ppo"` starts from
    [ppo] (which may inherit in turn), then applies [rloo]'s own keys. `overlays` (the pipeline's quick.toml)
    are applied after, each following the same chain. A missing table is empty."""
    chain = [name]
    while isinstance(tables.get(chain[-1]), dict) and "inherit" in tables[chain[-1]]:
        parent = tables[chain[-1]]["inherit"]
        if parent in chain:
            raise RlhfkitError(f"{source}: [{chain[-1]}] inherits from itself (through [{parent}])")
        chain.append(parent)
    out: dict[str, Any] = {}
    for layer in (tables, *overlays):
        for table_name in reversed(chain):
            table = layer.get(table_name, {})
            if not isinstance(table, dict):
                raise RlhfkitError(f"{source}: [{table_name}] must be a table of that command's options")
            out.update({k: v for k, v in table.items() if k != "inherit"})
    return out


# The pipeline's defaults, shipped with the package: `--config defaults` on any stage command reads them.
DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")


def split_config(spec: str, section: str | None) -> tuple[str, str | None]:
    """`FILE`, `FILE:TABLE` or `defaults[:TABLE]` -> (path, table); the table defaults to `section`."""
    path, sep, table = str(spec).rpartition(":") if ":" in str(spec) else (str(spec), "", "")
    if not sep or "/" in table or "." in table:  # a path with a colon in it, not a table name
        path, table = str(spec), ""
    if path == "defaults" and not Path(path).exists():
        path = str(DEFAULTS_FILE)
    return path, table or section


def load_toml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise RlhfkitError(f"{p}: config file not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RlhfkitError(f"{p}: invalid TOML ({exc})") from None


def _build(cls, file_values: dict, flags: dict, source=None, default=None):
    """`cls` from the file's values and the flags; every other field keeps its default: `default`'s value when
    `cls` is nested in another config, whose factory may set its own (SFT's loop has its own lr), else the
    class's."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in _option_fields(cls)}
    unknown = set(file_values) - names
    if unknown:
        raise RlhfkitError(f"{source}: unknown option(s) for {cls.__name__}: {', '.join(sorted(unknown))}")
    default = default if default is not None else cls()
    kwargs = {}
    for f in _option_fields(cls):
        tp = hints[f.name]
        if _is_config(tp):
            sub = file_values.get(f.name, {})
            if not isinstance(sub, dict):
                raise RlhfkitError(f"{source}: field '{f.name}' must be a table")
            kwargs[f.name] = _build(tp, sub, flags, source, getattr(default, f.name))
        elif f.name in flags:
            kwargs[f.name] = flags[f.name]
        elif f.name in file_values:
            kwargs[f.name] = file_values[f.name]
    return dataclasses.replace(default, **kwargs)
