"""Time to a validation target, measured the same way for rlhfkit and nanoGPT (imported by both sides).

`TargetClock.on_step(model, step)` is called after every optimizer step. Every `coarse` steps (every
`fine` steps once the last evaluation came within `margin` bits/char of the target) it stops the clock,
evaluates bits/char on a fixed held-out slice, and restarts the clock, so the evaluations that make the
time-to-target fine-grained are not charged to either side. `seconds` is training wall time since `start()`
minus those paused evaluations; `resolution_s` is the time between the evaluation that first reached the
target and the one before it (the true crossing lies in between).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class TargetReached(Exception):
    pass


class TargetClock:
    def __init__(
        self,
        target: float,
        evaluate: Callable[[torch.nn.Module], float],
        coarse: int,
        fine: int,
        margin: float = 0.1,
    ):
        self.target, self.evaluate, self.coarse, self.fine, self.margin = (
            target,
            evaluate,
            coarse,
            fine,
            margin,
        )
        self.curve: list[tuple[int, float, float]] = []  # (step, seconds, bits/char)
        self.reached: dict | None = None
        self.paused = 0.0
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.t0, self.paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def on_step(self, model: torch.nn.Module, step: int, last: bool = False) -> None:
        near = self.curve and self.curve[-1][2] < self.target + self.margin
        if not (last or step % (self.fine if near else self.coarse) == 0):
            return
        now = self.seconds()
        pause = time.perf_counter()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            bpc = float(self.evaluate(model))
        model.train(was_training)
        self.curve.append((step, round(now, 3), round(bpc, 4)))
        self.paused += time.perf_counter() - pause
        if bpc <= self.target and self.reached is None:
            before = self.curve[-2][1] if len(self.curve) > 1 else 0.0
            self.reached = {"step": step, "seconds": round(now, 2), "resolution_s": round(now - before, 2),
                            "bpc": round(bpc, 4)}  # fmt: skip
            raise TargetReached

    def summary(self) -> dict:
        return {
            "reached_target": self.reached is not None,
            **(self.reached or {}),
            "last": {"step": self.curve[-1][0], "seconds": self.curve[-1][1], "bpc": self.curve[-1][2]}
            if self.curve
            else None,
            "evaluations": len(self.curve),
            "curve": self.curve,
        }
