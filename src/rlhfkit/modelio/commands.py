"""`rlhfkit model import SOURCE --out DIR` and `rlhfkit model merge --adapter DIR --out DIR`."""

from __future__ import annotations

import argparse

from rlhfkit.config import add_command_group, add_config_args, add_config_command, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from rlhfkit.modelio.convert import ImportConfig, MergeConfig, merge_adapter

    msub = add_command_group(
        sub, "model", help="bring a model in: import a .gguf file or Hub model, merge an adapter"
    )
    imp = msub.add_parser(
        "import",
        help="save a .gguf file or Hub model as a plain Hugging Face folder (fast to load everywhere)",
        description="Load SOURCE (a .gguf file, dequantized; a Hub name; any model folder) and write a plain "
        "Hugging Face folder to --out: weights, tokenizer with its chat template, generation_config.",
    )
    imp.add_argument("source", metavar="SOURCE", help="a .gguf file, a Hub name or a model folder")
    add_config_args(imp, ImportConfig, required=("out",), skip=("source",))
    imp.set_defaults(func=_import)
    add_config_command(
        msub,
        "merge",
        MergeConfig,
        merge_adapter,
        section="model_merge",
        required=("adapter", "out"),
        done="model merge: {config.adapter} -> {out}",
        help="merge a PEFT adapter into its base and save one plain Hugging Face folder",
        description="Apply the adapter in --adapter to its base (base_model_name_or_path in adapter_config.json), "
        "merge the weights and write a plain Hugging Face folder to --out.",
    )


def _import(args: argparse.Namespace) -> int:
    from rlhfkit.modelio.convert import ImportConfig, import_model

    cfg = config_from_args(ImportConfig, args, "model_import")
    cfg.source = args.source
    print(f"model import: {cfg.source} -> {import_model(cfg)}")
    return 0
