"""Loading a model to sample from: any source, on the chosen device in the chosen dtype, with a chat template.

Every command that runs a model for inference (generate, chat, serve, evaluate, cai) loads through
`load_for_generation`, so they all accept the same sources (local folder, `.gguf` file, Hub name, PEFT adapter
folder: see `rlhfkit.models.load_causal_lm`), the same `--device`/`--dtype` and `--chat-template FILE`.
The tokenizer is loaded (and its template checked) before the weights, so a missing template fails at once.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.errors import RlhfkitError


def load_for_generation(
    source: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: str | Path | None = None,
    need_chat_template: bool = True,
):
    """(model in eval mode, tokenizer) for `source` on `device` (`auto|cpu|cuda[:N]`) in `dtype`
    (`auto|float32|bfloat16|float16`). `chat_template`: a Jinja file that replaces the tokenizer's template;
    with `need_chat_template`, a model left without one is a clear error naming it."""
    from rlhfkit.device import pick_device, pick_dtype
    from rlhfkit.generation.turns import read_chat_template, require_chat_template
    from rlhfkit.models import check_source, load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

    check_source(source)  # a missing model is named as a model, not as a missing tokenizer
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    tokenizer = load_tokenizer(source)
    if chat_template:
        tokenizer.chat_template = read_chat_template(chat_template)
    if need_chat_template:
        require_chat_template(tokenizer, source)
    # Frozen: inference never trains it, and the lean engine keeps a frozen model's packed weights.
    model = load_causal_lm(source, dtype=torch_dtype, device=torch_device).eval().requires_grad_(False)
    return model, tokenizer


def template_for(name: str, specs: list[str] | tuple[str, ...] | str | None) -> str | None:
    """The `--chat-template` for model `name` among `FILE` (every model) and `NAME=FILE` (that model) values."""
    if not specs:
        return None
    if isinstance(specs, str):
        specs = [specs]
    chosen = None
    for spec in specs:
        target, sep, path = spec.partition("=")
        if not sep:
            chosen = chosen or spec
        elif not target or not path:
            raise RlhfkitError(f"--chat-template '{spec}': expected FILE or NAME=FILE")
        elif target == name:
            return path
    return chosen


def check_template_targets(specs: list[str] | None, names: list[str]) -> None:
    """Every `NAME=FILE` `--chat-template` must name one of the models (a typo would silently do nothing)."""
    for spec in specs or []:
        target, sep, _ = spec.partition("=")
        if sep and target not in names:
            raise RlhfkitError(
                f"--chat-template '{spec}': there is no model named '{target}' ({', '.join(names)})"
            )
