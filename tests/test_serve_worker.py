"""The batchers' worker thread: it runs a model's torch work with its own CPU-thread count, and other work on
the model (`call`) runs there too, between steps; `rlhfkit serve` keeps its own thread at one CPU thread."""

from __future__ import annotations

import threading

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.serve.batching import Batcher


def idle_batcher(threads: int | None) -> Batcher:
    return Batcher(lambda pieces: iter(()), threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_calls_run_on_the_worker_with_its_own_thread_count(threads):
    before = torch.get_num_threads()
    batcher = idle_batcher(threads)
    try:
        seen = batcher.call(lambda: (threading.current_thread().name, torch.get_num_threads())).result(10)
    finally:
        batcher.close()
    assert seen == ("rlhfkit-serve-batcher", threads)
    assert torch.get_num_threads() == before  # the caller's own setting is untouched


def test_a_failing_call_reaches_its_caller_and_the_worker_goes_on():
    batcher = idle_batcher(1)
    try:
        with pytest.raises(ZeroDivisionError):
            batcher.call(lambda: 1 / 0).result(10)
        assert batcher.call(lambda: 41 + 1).result(10) == 42
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.call(lambda: None)


def test_serve_keeps_its_own_thread_at_one_and_hands_the_threads_to_the_workers(monkeypatch, tmp_path):
    seen = {}

    def fake_load(specs, **options):
        seen["main_threads"] = torch.get_num_threads()
        seen["worker_threads"] = options["threads"]
        raise SystemExit(0)  # stop before any server starts

    monkeypatch.setattr("rlhfkit.serve.served.load_served_models", fake_load)
    before = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit):
            main(["serve", "--model", f"x={tmp_path}", "--threads", "3"])
    finally:
        torch.set_num_threads(before)
    assert seen == {"main_threads": 1, "worker_threads": 3}


def test_calls_still_queued_when_the_worker_stops_fail_and_cancelled_ones_stay_cancelled():
    batcher = idle_batcher(1)
    # Queue two calls and close in one go, before the worker wakes: it sees the close first and stops.
    with batcher._wakeup:
        cancelled, queued = batcher.call(lambda: "ran"), batcher.call(lambda: "ran")
        assert cancelled.cancel()  # as asyncio does when the awaiting request is cancelled
        batcher._closed = True
        batcher._wakeup.notify()
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        queued.result(10)
    assert cancelled.cancelled()
