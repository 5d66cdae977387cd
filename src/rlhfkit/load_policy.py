"""What loading a model may do besides reading weights: both risky things are off unless the user opts in.

- **Code from a model folder** (`trust_remote_code`). A `config.json` or `tokenizer_config.json` with an
  `auto_map` names Python files inside the folder (or Hub repository). When transformers is not told either
  way, it *asks on stdin* whether to run them; `rlhfkit chat` reads its own input from stdin, so a scripted
  "y" would have run a planted folder's code. We always pass an explicit answer, so stdin is never consulted,
  and the answer is "no" unless `--trust-remote-code` was given.
- **Kernels from the Hub** (`use_kernels`). transformers 5.x turns them on by default when the `kernels`
  package is installed: `model.train()` then fetches compiled code (`kernels-community/...`) from the Hub
  and runs it, which fails offline and, online, runs code nobody asked for. Off unless `--hub-kernels`.

Every `from_pretrained` in rlhfkit takes its kwargs from `from_pretrained_kwargs()`;
`tests/test_load_policy.py` loads through every path and checks that neither is on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError


@dataclass
class LoadPolicy:
    trust_remote_code: bool = False  # run Python files a model folder names in its auto_map
    hub_kernels: bool = False  # let transformers fetch and run compute kernels from the Hugging Face Hub


POLICY = LoadPolicy()

OPTIONS_HELP = {
    "trust_remote_code": "run the Python code a model folder or Hub repository ships (its config's auto_map). "
    "This executes that code with your permissions: only for sources you trust. Off by default: such a model "
    "is refused with an error naming the code it wanted to run",
    "hub_kernels": "let transformers download and run compute kernels from the Hugging Face Hub "
    "(`use_kernels`; needs network access and the `kernels` package). Off by default",
}


@contextlib.contextmanager
def allowing(trust_remote_code: bool = False, hub_kernels: bool = False) -> Iterator[LoadPolicy]:
    """Opt in for the duration of a command. Nested commands (the pipeline runs stages in-process) keep what
    an outer one allowed; on exit the previous policy comes back, so one command never leaks into the next."""
    before = LoadPolicy(POLICY.trust_remote_code, POLICY.hub_kernels)
    POLICY.trust_remote_code = before.trust_remote_code or trust_remote_code
    POLICY.hub_kernels = before.hub_kernels or hub_kernels
    try:
        yield POLICY
    finally:
        POLICY.trust_remote_code, POLICY.hub_kernels = before.trust_remote_code, before.hub_kernels


def from_pretrained_kwargs(model: bool = True) -> dict:
    """The explicit answers every `from_pretrained` gets (`model=False` for tokenizers: no kernels there)."""
    kwargs = {"trust_remote_code": POLICY.trust_remote_code}
    if model:
        kwargs["use_kernels"] = POLICY.hub_kernels
    return kwargs


def check_remote_code(folder: str | Path) -> None:
    """Refuse, before transformers sees it, a local folder that would need its own code to load.

    transformers given `trust_remote_code=False` refuses too, but its message is long and names neither the
    folder's code nor the way out; ours names both. A folder whose `auto_map` sits beside a `model_type`
    transformers knows loads with the built-in class and never runs the folder's code, so it is allowed."""
    if POLICY.trust_remote_code:
        return
    p = Path(folder)
    for name in ("config.json", "tokenizer_config.json"):
        path = p / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, OSError):
            continue  # the loader reports a malformed file with its own error
        if not isinstance(config, dict) or not config.get("auto_map"):
            continue
        if name == "config.json" and _known_model_type(config.get("model_type")):
            continue
        if name == "tokenizer_config.json" and _known_tokenizer_class(config.get("tokenizer_class")):
            continue
        raise remote_code_error(path, config["auto_map"])


def remote_code_error(where: str | Path, auto_map=None) -> RlhfkitError:
    """`auto_map` as read from a local folder; None for a Hub repository, which transformers refused unread."""
    shown = "the repository's auto_map" if auto_map is None else f"auto_map: {json.dumps(auto_map)[:200]}"
    return RlhfkitError(
        f"{where}: this model needs its own Python code to load ({shown}); "
        "rlhfkit does not run code from model folders unless you pass --trust-remote-code (it runs that code "
        "with your permissions: only for sources you trust)"
    )


def is_remote_code_refusal(exc: BaseException) -> bool:
    """Whether transformers refused a load because it would need `trust_remote_code` (a Hub name, whose
    config we cannot read before transformers fetches it)."""
    return "trust_remote_code" in str(exc)


def _known_model_type(model_type) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def _known_tokenizer_class(tokenizer_class) -> bool:
    import transformers

    if not isinstance(tokenizer_class, str):
        return False
    return hasattr(transformers, tokenizer_class) or hasattr(
        transformers, tokenizer_class.removesuffix("Fast")
    )
