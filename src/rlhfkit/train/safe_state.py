"""Training state on disk without pickle: tensors in a safetensors file, everything else in JSON.

Why: a resume reads whatever lies in `<out>/checkpoint/`, and output folders often sit on shared filesystems.
Unpickling a file from there (`torch.load(weights_only=False)`) runs any code a planted file carries. Here
nothing read back can execute: safetensors holds raw tensor bytes, JSON holds plain values, and the few Python
shapes JSON lacks (tuples, integer dict keys, numpy arrays) are tagged and rebuilt by this module alone.

    save_state(state, folder, "trainer")  ->  trainer.safetensors + trainer.json
    load_state(folder, "trainer")         ->  the same nested dict (tensors, tuples, int keys, numpy arrays)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlhfkit.errors import RlhfkitError, first_line

FORMAT = "rlhfkit-state/1"


def save_state(state: dict, folder: Path, name: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors)
    save_file(tensors, str(Path(folder) / f"{name}.safetensors"))
    (Path(folder) / f"{name}.json").write_text(json.dumps({"format": FORMAT, "state": encoded}))


def load_state(folder: Path, name: str) -> dict:
    """The state `save_state` wrote, or a clear error naming the file for anything else."""
    meta_path = Path(folder) / f"{name}.json"
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(Path(folder) / f"{name}.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise _damaged(meta_path, first_line(exc)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _damaged(meta_path, f"field 'format' is not {FORMAT!r}")
    try:
        return _decode(meta["state"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(meta_path, first_line(exc)) from None


def _damaged(path: Path, why: str) -> RlhfkitError:
    return RlhfkitError(
        f"{path}: not a training state this rlhfkit wrote ({why}); "
        f"remove {path.parent} to start the stage over, or use another --out"
    )


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        # safetensors refuses views of shared storage: store a compact copy.
        tensors[key] = value.detach().to("cpu").clone().contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(value.copy()), tensors)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _encode(v, tensors) for k, v in value.items()}}
        if all(isinstance(k, int) for k in value):  # optimizer state: parameter index -> state
            return {"__intdict__": {str(k): _encode(v, tensors) for k, v in value.items()}}
        raise TypeError(f"cannot store a dict with keys of types {sorted({type(k).__name__ for k in value})}")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a training state")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, inner), *rest = value.items()
    if rest:
        raise ValueError(f"unexpected keys {sorted(value)}")
    if tag == "__tensor__":
        return tensors[inner]
    if tag == "__ndarray__":
        return _decode(inner, tensors).numpy()
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in inner)
    if tag == "__dict__":
        return {k: _decode(v, tensors) for k, v in inner.items()}
    if tag == "__intdict__":
        return {int(k): _decode(v, tensors) for k, v in inner.items()}
    raise ValueError(f"unknown tag {tag!r}")
