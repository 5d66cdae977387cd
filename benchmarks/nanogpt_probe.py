"""Run inside nanoGPT's train.py to time it to a validation target (see pretrain_shakespeare.py).

nanoGPT's configurator executes every positional argument of train.py as a config file in train.py's own
namespace; pretrain_shakespeare.py passes this file after nanoGPT's shakespeare_char config, so it runs
before training starts with `model`, `iter_num` and `max_iters` visible as globals. It registers an
optimizer-step hook that feeds benchmarks/target_clock.py (the same clock rlhfkit's side uses), evaluating
bits/char on fixed non-overlapping windows at the start of nanoGPT's validation split, and writes the
result as JSON to the path in $RLHFKIT_NANOGPT_PROBE's "result" when the target is reached (training stops
there) or when training ends. nanoGPT's own code is not modified or copied.
"""

import atexit  # noqa: I001  (executed by nanoGPT's configurator, not imported)
import json
import math
import os
import sys

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, os.path.dirname(os.path.abspath(config_file)))  # noqa: F821  (nanoGPT's global)
from target_clock import TargetClock, TargetReached  # noqa: E402

_probe = json.loads(os.environ["RLHFKIT_NANOGPT_PROBE"])
_val: list = []


def _bits_per_char(model) -> float:
    if not _val:  # built at the first evaluation: --block_size is applied after this file runs
        T = block_size  # noqa: F821
        data = np.fromfile(os.path.join("data", dataset, "val.bin"), dtype=np.uint16)  # noqa: F821
        n = min((len(data) - 1) // T, max(1, _probe["eval_chars"] // T))
        _val.append(
            torch.from_numpy(np.stack([data[i * T : i * T + T + 1] for i in range(n)]).astype(np.int64))
        )
    windows = _val[0]
    total = 0.0
    for i in range(0, len(windows), 64):
        w = windows[i : i + 64]
        _, loss = model(w[:, :-1].contiguous(), w[:, 1:].contiguous())  # mean nats per char over the batch
        total += float(loss) * len(w)
    return total / len(windows) / math.log(2)


_clock = TargetClock(_probe["target"], _bits_per_char, _probe["coarse"], _probe["fine"], _probe["margin"])


def _write() -> None:
    with open(_probe["result"], "w", encoding="utf-8") as f:
        json.dump(_clock.summary(), f)


def _after_step(optimizer, args, kwargs) -> None:
    step = iter_num + 1  # noqa: F821  (nanoGPT increments iter_num after the step)
    try:
        _clock.on_step(model, step, last=iter_num >= max_iters)  # noqa: F821
    except TargetReached:
        _write()
        os._exit(0)  # the target is reached: the rest of nanoGPT's run is not timed


register_optimizer_step_post_hook(_after_step)
atexit.register(_write)
_clock.start()
